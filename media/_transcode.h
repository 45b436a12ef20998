/*
 * The transcoder the pump calls (media/_transcode.c): media/transcoder.py's Transcoder in C.
 */
#ifndef MEDIA_TRANSCODE_H
#define MEDIA_TRANSCODE_H

#include <Python.h>
#include <stdint.h>

/* Packets one input packet can become: up to MAX_CONCEALED (5) concealed ones, then its own. */
#define TC_MAX_OUT 6
/* Room for one output packet: MAX_PACKET bytes plus what SRTP protect may append. */
#define TC_PACKET_ROOM (1500 + 144)

typedef struct {
    int len;
    uint8_t data[TC_PACKET_ROOM];
} TcPacket;

/* Where an RTP packet's payload starts and ends, padding excluded (RFC 3550 s5.1, the A.1 validity checks);
 * 1 if the packet is valid RTP of at most ``max_len`` bytes, 0 if not. */
static inline int rtp_payload_bounds(const uint8_t *p, int len, int max_len, int *start, int *end) {
    if (len < 12 || len > max_len || (p[0] >> 6) != 2) {
        return 0;
    }
    int offset = 12 + 4 * (p[0] & 0x0F);
    if (offset > len) {
        return 0;
    }
    if (p[0] & 0x10) {
        if (offset + 4 > len) {
            return 0;
        }
        offset += 4 + 4 * ((p[offset + 2] << 8) | p[offset + 3]);
        if (offset > len) {
            return 0;
        }
    }
    int padding = 0;
    if (p[0] & 0x20) {
        padding = p[len - 1];
        if (padding == 0 || offset + padding > len) {
            return 0;
        }
    }
    *start = offset;
    *end = len - padding;
    return 1;
}

typedef struct Transcoder Transcoder;

extern PyTypeObject TranscoderType;

/* Transcode one valid RTP packet, whose payload is ``packet[start:end]`` (rtp_payload_bounds), into
 * ``out``; returns how many packets were written (0 when the packet is late, a duplicate or undecodable:
 * counted in the transcoder). Each output packet carries the input's payload type and SSRC and a sequence
 * number and timestamp in the input's numbering, for the stream rewriter to map, exactly as
 * media/transcoder.py's. */
int tc_transcode(Transcoder *self, const uint8_t *packet, int start, int end, TcPacket out[TC_MAX_OUT]);

/* The module functions use_libopus and decode_calls. */
extern PyMethodDef tc_functions[];

/* Build the G.711 tables (once, at module import). */
void tc_build_tables(void);

#endif
