/*
 * media._fastpath.Transcoder: media/transcoder.py's Transcoder in C, so the pump transcodes a call's packets
 * without going up to Python (see media/fastpath.py for the figures).
 *
 * It does what the Python class does and gives the same bytes (tests/media/test_native_transcoder.py holds
 * the two to that): decode the payload (G.711 by table, Opus by libopus at 8 kHz), conceal a gap of up to
 * MAX_CONCEALED packets (libopus PLC and in-band FEC recovery, RFC 7587 s3.1, or a G.711 frame repeated at
 * half level per packet), drop late and duplicate packets, encode (G.711 by table, Opus by libopus, 10 ms
 * frames joined by its repacketizer for durations Opus has no single frame for, RFC 6716 s3.2.5), and hand
 * out packets numbered in the input's sequence and timestamp space for the rewriter to map.
 *
 * libopus is the copy media/opus.py loaded with ctypes: Python creates the encoder and decoder (the
 * media.opus objects own them) and gives us the addresses of the libopus functions (use_libopus), as the
 * pump gets libsrtp's from pylibsrtp. So the extension links nothing but libc, and one libopus serves both
 * paths.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_transcode.h"

#define MAX_CONCEALED 5
/* Samples a frame can hold: a G.711 payload of a whole MAX_PACKET datagram; Opus decodes at most 120 ms. */
#define MAX_PCM 1500
#define OPUS_MAX_FRAME 960 /* 120 ms at 8 kHz */
#define OPUS_TEN_MS 80
/* What one encoded payload may take so its packet fits MAX_PACKET (media/opus.py asks for the same). */
#define MAX_PAYLOAD (1500 - 12)

typedef int (*opus_decode_fn)(void *st, const unsigned char *data, int32_t len, int16_t *pcm, int frame_size,
                              int decode_fec);
typedef int32_t (*opus_encode_fn)(void *st, const int16_t *pcm, int frame_size, unsigned char *data,
                                  int32_t max_data_bytes);
typedef void *(*repacketizer_create_fn)(void);
typedef void *(*repacketizer_init_fn)(void *rp);
typedef int (*repacketizer_cat_fn)(void *rp, const unsigned char *data, int32_t len);
typedef int32_t (*repacketizer_out_fn)(void *rp, unsigned char *data, int32_t maxlen);
typedef void (*repacketizer_destroy_fn)(void *rp);

static struct {
    opus_decode_fn decode;
    opus_encode_fn encode;
    repacketizer_create_fn repacketizer_create;
    repacketizer_init_fn repacketizer_init;
    repacketizer_cat_fn repacketizer_cat;
    repacketizer_out_fn repacketizer_out;
    repacketizer_destroy_fn repacketizer_destroy;
} opus;

/* Every decode in the process, as media/g711.py's DECODE_CALLS counts them (the passthrough tests read both). */
static long long decode_calls;

static int16_t ulaw_to_linear[256], alaw_to_linear[256];
static uint8_t linear_to_ulaw[65536], linear_to_alaw[65536]; /* keyed by sample + 32768 */

enum { CODEC_PCMU, CODEC_PCMA, CODEC_OPUS };

struct Transcoder {
    PyObject_HEAD
    int source, target;
    PyObject *opus_decoder, *opus_encoder; /* media.opus objects: they own the libopus states */
    void *decoder, *encoder, *repacketizer;
    int ticks_per_sample; /* input RTP clock ticks per 8 kHz sample: 6 from Opus, 1 from G.711 */
    int has_last;
    uint16_t last_seq;
    uint32_t last_ts, frame_ts;
    int last_frame_len;
    int16_t last_frame[MAX_PCM];
    long long concealed, late_dropped, codec_errors;
};

/* G.711 ------------------------------------------------------------------------------------------------ */
/* The same reference algorithms media/g711.py builds its numpy tables from. */
static int16_t ulaw_decode_one(int code) {
    code = ~code & 0xFF;
    int exponent = (code >> 4) & 0x07, mantissa = code & 0x0F;
    int sample = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    return (int16_t)((code & 0x80) ? -sample : sample);
}

static int16_t alaw_decode_one(int code) {
    code ^= 0x55;
    int exponent = (code >> 4) & 0x07, mantissa = code & 0x0F;
    int sample = exponent == 0 ? (mantissa << 4) + 8 : ((mantissa << 4) + 0x108) << (exponent - 1);
    return (int16_t)((code & 0x80) ? sample : -sample);
}

static uint8_t ulaw_encode_one(int sample) {
    static const int ends[8] = {0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF};
    int value = sample >> 2, mask = 0xFF;
    if (value < 0) {
        value = -value;
        mask = 0x7F;
    }
    value = (value < 8159 ? value : 8159) + 0x21;
    for (int segment = 0; segment < 8; segment++) {
        if (value <= ends[segment]) {
            return (uint8_t)(((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask);
        }
    }
    return (uint8_t)(0x7F ^ mask);
}

static uint8_t alaw_encode_one(int sample) {
    int sign = sample >= 0 ? 0x80 : 0;
    int magnitude = sample >= 0 ? sample : -sample - 1;
    magnitude = (magnitude < 32767 ? magnitude : 32767) >> 3;
    int code;
    if (magnitude < 32) {
        code = magnitude >> 1;
    } else {
        int exponent = 0;
        for (int m = magnitude; m >= 32; m >>= 1) {
            exponent++; /* bit_length(magnitude) - 5 */
        }
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F);
    }
    return (uint8_t)((sign | code) ^ 0x55);
}

static void build_g711_tables(void) {
    for (int code = 0; code < 256; code++) {
        ulaw_to_linear[code] = ulaw_decode_one(code);
        alaw_to_linear[code] = alaw_decode_one(code);
    }
    for (int sample = -32768; sample < 32768; sample++) {
        linear_to_ulaw[sample + 32768] = ulaw_encode_one(sample);
        linear_to_alaw[sample + 32768] = alaw_encode_one(sample);
    }
}

/* Decode and encode ------------------------------------------------------------------------------------- */
/* Samples decoded into ``pcm`` (at most MAX_PCM), or 0 if the payload does not decode. */
static int decode(Transcoder *self, const uint8_t *payload, int size, int16_t *pcm) {
    if (size <= 0) {
        return 0;
    }
    decode_calls++;
    if (self->source == CODEC_OPUS) {
        int count = opus.decode(self->decoder, payload, size, pcm, OPUS_MAX_FRAME, 0);
        return count > 0 ? count : 0;
    }
    const int16_t *table = self->source == CODEC_PCMU ? ulaw_to_linear : alaw_to_linear;
    for (int i = 0; i < size; i++) {
        pcm[i] = table[payload[i]];
    }
    return size;
}

static int opus_frame_size(int count) {
    /* 2.5, 5, 10, 20, 40 and 60 ms at 8 kHz (RFC 6716 s2.1.4) */
    return count == 20 || count == 40 || count == 80 || count == 160 || count == 320 || count == 480;
}

/* Opus for a duration with no single Opus frame (a 30 ms G.711 trunk): 10 ms frames in one packet. */
static int encode_opus_joined(Transcoder *self, const int16_t *pcm, int count, uint8_t *out) {
    static uint8_t frames[OPUS_MAX_FRAME / OPUS_TEN_MS][MAX_PAYLOAD];
    if (count % OPUS_TEN_MS || count <= 0 || count > OPUS_MAX_FRAME) {
        return -1;
    }
    if (self->repacketizer == NULL) {
        self->repacketizer = opus.repacketizer_create();
        if (self->repacketizer == NULL) {
            return -1;
        }
    }
    opus.repacketizer_init(self->repacketizer);
    for (int i = 0; i < count / OPUS_TEN_MS; i++) {
        int32_t size = opus.encode(self->encoder, pcm + i * OPUS_TEN_MS, OPUS_TEN_MS, frames[i], MAX_PAYLOAD);
        if (size < 0 || opus.repacketizer_cat(self->repacketizer, frames[i], size) != 0) {
            return -1;
        }
    }
    int32_t size = opus.repacketizer_out(self->repacketizer, out, MAX_PAYLOAD);
    return size < 0 ? -1 : (int)size;
}

/* The encoded payload's size in ``out``, or -1 if this frame cannot be encoded. */
static int encode(Transcoder *self, const int16_t *pcm, int count, uint8_t *out) {
    if (self->target == CODEC_OPUS) {
        if (!opus_frame_size(count)) {
            return encode_opus_joined(self, pcm, count, out);
        }
        int32_t size = opus.encode(self->encoder, pcm, count, out, MAX_PAYLOAD);
        return size < 0 ? -1 : (int)size;
    }
    if (count > MAX_PAYLOAD) {
        return -1;
    }
    const uint8_t *table = self->target == CODEC_PCMU ? linear_to_ulaw : linear_to_alaw;
    for (int i = 0; i < count; i++) {
        out[i] = table[pcm[i] + 32768];
    }
    return count;
}

/* One output packet from one frame: the input's payload type and SSRC, for the rewriter. */
static int push(Transcoder *self, const int16_t *pcm, int count, uint16_t seq, uint32_t ts, int marker,
                const uint8_t *input, TcPacket *out) {
    int size = encode(self, pcm, count, out->data + 12);
    if (size < 0) {
        self->codec_errors++;
        return 0;
    }
    uint8_t *p = out->data;
    p[0] = 0x80;
    p[1] = (uint8_t)((marker ? 0x80 : 0) | (input[1] & 0x7F));
    p[2] = (uint8_t)(seq >> 8);
    p[3] = (uint8_t)seq;
    p[4] = (uint8_t)(ts >> 24);
    p[5] = (uint8_t)(ts >> 16);
    p[6] = (uint8_t)(ts >> 8);
    p[7] = (uint8_t)ts;
    memcpy(p + 8, input + 8, 4);
    out->len = 12 + size;
    return 1;
}

/* Fill ``missing`` lost packets before the one at hand (see the module comment); returns packets written. */
static int conceal(Transcoder *self, int missing, const uint8_t *payload, int size, const uint8_t *input,
                   TcPacket *out) {
    int16_t frame[MAX_PCM];
    int count = self->last_frame_len, written = 0;
    memcpy(frame, self->last_frame, sizeof(int16_t) * (size_t)count);
    for (int k = 1; k <= missing; k++) {
        if (self->source != CODEC_OPUS) {
            for (int i = 0; i < count; i++) {
                frame[i] = (int16_t)(frame[i] >> 1); /* floor(x / 2), as numpy's // */
            }
        } else if (k < missing) {
            count = opus.decode(self->decoder, NULL, 0, frame, count, 0);
        } else {
            count = opus.decode(self->decoder, payload, size, frame, count, 1);
        }
        if (count <= 0) {
            self->codec_errors++;
            break;
        }
        self->concealed++;
        written += push(self, frame, count, (uint16_t)(self->last_seq + k),
                        self->last_ts + (uint32_t)k * self->frame_ts, 0, input, out + written);
    }
    return written;
}

int tc_transcode(Transcoder *self, const uint8_t *packet, int start, int end, TcPacket out[TC_MAX_OUT]) {
    uint16_t seq = (uint16_t)((packet[2] << 8) | packet[3]);
    uint32_t ts = ((uint32_t)packet[4] << 24) | ((uint32_t)packet[5] << 16) | ((uint32_t)packet[6] << 8) | packet[7];
    const uint8_t *payload = packet + start;
    int size = end - start, written = 0;
    if (self->has_last) {
        int missing = (uint16_t)(seq - self->last_seq - 1);
        if (missing >= 0x8000) { /* late or duplicate: the gap was concealed already */
            self->late_dropped++;
            return 0;
        }
        if (missing > 0 && missing <= MAX_CONCEALED && self->last_frame_len > 0) {
            written = conceal(self, missing, payload, size, packet, out);
        }
    }
    int16_t pcm[MAX_PCM];
    int count = decode(self, payload, size, pcm);
    if (count == 0) {
        self->codec_errors++;
    } else {
        memcpy(self->last_frame, pcm, sizeof(int16_t) * (size_t)count);
        self->last_frame_len = count;
        self->frame_ts = (uint32_t)(count * self->ticks_per_sample);
        written += push(self, pcm, count, seq, ts, packet[1] & 0x80, packet, out + written);
    }
    self->has_last = 1;
    self->last_seq = seq;
    self->last_ts = ts;
    return written;
}

/* The Python type --------------------------------------------------------------------------------------- */
static int codec_of(PyObject *name) {
    if (PyUnicode_Check(name)) {
        if (PyUnicode_CompareWithASCIIString(name, "pcmu") == 0) {
            return CODEC_PCMU;
        }
        if (PyUnicode_CompareWithASCIIString(name, "pcma") == 0) {
            return CODEC_PCMA;
        }
        if (PyUnicode_CompareWithASCIIString(name, "opus") == 0) {
            return CODEC_OPUS;
        }
    }
    return -1;
}

static void *opus_handle(PyObject *owner, const char *role) {
    PyObject *handle = owner == Py_None ? NULL : PyObject_GetAttrString(owner, "_handle");
    void *pointer = handle == NULL ? NULL : PyLong_AsVoidPtr(handle);
    Py_XDECREF(handle);
    if (pointer == NULL && !PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "a libopus %s is needed (media.opus, with libopus loaded)", role);
    }
    return pointer;
}

static int Transcoder_init(Transcoder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"source", "target", "decoder", "encoder", NULL};
    PyObject *source, *target, *decoder = Py_None, *encoder = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "UU|OO", kwlist, &source, &target, &decoder, &encoder)) {
        return -1;
    }
    int src = codec_of(source), dst = codec_of(target);
    if (src < 0 || dst < 0 || src == dst || (src != CODEC_OPUS) + (dst != CODEC_OPUS) == 0) {
        PyErr_Format(PyExc_ValueError, "cannot transcode %U to %U", source, target);
        return -1;
    }
    if ((src == CODEC_OPUS || dst == CODEC_OPUS) && (opus.decode == NULL || opus.encode == NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "use_libopus() has not been called");
        return -1;
    }
    void *decoder_state = src == CODEC_OPUS ? opus_handle(decoder, "decoder") : NULL;
    if (src == CODEC_OPUS && decoder_state == NULL) {
        return -1;
    }
    void *encoder_state = dst == CODEC_OPUS ? opus_handle(encoder, "encoder") : NULL;
    if (dst == CODEC_OPUS && encoder_state == NULL) {
        return -1;
    }
    self->source = src;
    self->target = dst;
    Py_INCREF(decoder);
    Py_XSETREF(self->opus_decoder, decoder);
    Py_INCREF(encoder);
    Py_XSETREF(self->opus_encoder, encoder);
    self->decoder = decoder_state;
    self->encoder = encoder_state;
    self->ticks_per_sample = src == CODEC_OPUS ? 6 : 1;
    self->has_last = 0;
    self->last_frame_len = 0;
    self->frame_ts = src == CODEC_OPUS ? 960 : 160;
    return 0;
}

static int Transcoder_traverse(Transcoder *self, visitproc visit, void *arg) {
    Py_VISIT(self->opus_decoder);
    Py_VISIT(self->opus_encoder);
    return 0;
}

static int Transcoder_clear(Transcoder *self) {
    Py_CLEAR(self->opus_decoder);
    Py_CLEAR(self->opus_encoder);
    return 0;
}

static void Transcoder_dealloc(Transcoder *self) {
    PyObject_GC_UnTrack(self);
    if (self->repacketizer != NULL) {
        opus.repacketizer_destroy(self->repacketizer);
    }
    Transcoder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Transcoder_transcode(Transcoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "transcode(packet, header, now)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    TcPacket out[TC_MAX_OUT];
    int start, end, count = 0;
    int len = (int)(view.len < 65536 ? view.len : 65536);
    if (rtp_payload_bounds(view.buf, len, 1500, &start, &end)) {
        count = tc_transcode(self, view.buf, start, end, out);
    } else {
        self->codec_errors++;
    }
    PyBuffer_Release(&view);
    PyObject *list = PyList_New(count);
    for (int i = 0; list != NULL && i < count; i++) {
        PyObject *packet = PyByteArray_FromStringAndSize((const char *)out[i].data, out[i].len);
        if (packet == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, packet);
    }
    return list;
}

static PyObject *Transcoder_adapt_to_loss(Transcoder *self, PyObject *arg) {
    double fraction = PyFloat_AsDouble(arg);
    if (fraction == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (self->opus_encoder == NULL || self->opus_encoder == Py_None) {
        Py_RETURN_NONE;
    }
    /* The same rule as media/transcoder.py: follow the reported loss, at least 1 %, at most 25 %. */
    double percent = nearbyint(fraction * 100.0);
    percent = percent < 1.0 ? 1.0 : (percent > 25.0 ? 25.0 : percent);
    return PyObject_CallMethod(self->opus_encoder, "set_expected_loss", "i", (int)percent);
}

static PyMethodDef Transcoder_methods[] = {
    {"transcode", (PyCFunction)(void (*)(void))Transcoder_transcode, METH_FASTCALL,
     "transcode(packet, header, now) -> list[bytearray], as media.transcoder.Transcoder.transcode."},
    {"adapt_to_loss", (PyCFunction)Transcoder_adapt_to_loss, METH_O,
     "Follow the loss the receiver reports with the Opus encoder's FEC (see media.transcoder)."},
    {NULL},
};

static PyMemberDef Transcoder_members[] = {
    {"opus_encoder", T_OBJECT, offsetof(Transcoder, opus_encoder), READONLY, "The Opus encoder, or None."},
    {"concealed", T_LONGLONG, offsetof(Transcoder, concealed), READONLY, NULL},
    {"late_dropped", T_LONGLONG, offsetof(Transcoder, late_dropped), READONLY, NULL},
    {"codec_errors", T_LONGLONG, offsetof(Transcoder, codec_errors), READONLY, NULL},
    {NULL},
};

PyTypeObject TranscoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._fastpath.Transcoder",
    .tp_basicsize = sizeof(Transcoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One direction of a transcoded call (see media.transcoder.Transcoder, which it mirrors).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Transcoder_init,
    .tp_dealloc = (destructor)Transcoder_dealloc,
    .tp_traverse = (traverseproc)Transcoder_traverse,
    .tp_clear = (inquiry)Transcoder_clear,
    .tp_methods = Transcoder_methods,
    .tp_members = Transcoder_members,
};

/* Module functions -------------------------------------------------------------------------------------- */
static PyObject *use_libopus(PyObject *module, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"decode",          "encode",          "repacketizer_create", "repacketizer_init",
                             "repacketizer_cat", "repacketizer_out", "repacketizer_destroy", NULL};
    unsigned long long a[7];
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$KKKKKKK", kwlist, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5],
                                     &a[6])) {
        return NULL;
    }
    for (int i = 0; i < 7; i++) {
        if (a[i] == 0) {
            PyErr_Format(PyExc_ValueError, "no address for %s", kwlist[i]);
            return NULL;
        }
    }
    opus.decode = (opus_decode_fn)(uintptr_t)a[0];
    opus.encode = (opus_encode_fn)(uintptr_t)a[1];
    opus.repacketizer_create = (repacketizer_create_fn)(uintptr_t)a[2];
    opus.repacketizer_init = (repacketizer_init_fn)(uintptr_t)a[3];
    opus.repacketizer_cat = (repacketizer_cat_fn)(uintptr_t)a[4];
    opus.repacketizer_out = (repacketizer_out_fn)(uintptr_t)a[5];
    opus.repacketizer_destroy = (repacketizer_destroy_fn)(uintptr_t)a[6];
    Py_RETURN_NONE;
}

static PyObject *get_decode_calls(PyObject *module, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLongLong(decode_calls);
}

PyMethodDef tc_functions[] = {
    {"use_libopus", (PyCFunction)(void (*)(void))use_libopus, METH_VARARGS | METH_KEYWORDS,
     "The addresses of the libopus functions media.opus loaded (opus_decode, opus_encode, the repacketizer)."},
    {"decode_calls", (PyCFunction)get_decode_calls, METH_NOARGS, "Decodes done by C transcoders so far."},
    {NULL},
};

void tc_build_tables(void) {
    build_g711_tables();
}
