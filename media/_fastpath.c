/*
 * media._fastpath: the relay's per-packet work in C (see media/fastpath.py for the why).
 *
 * A Pump owns an epoll set of the call legs' UDP sockets; asyncio watches the epoll descriptor and calls
 * Pump.run() when it is readable. run() drains every ready socket and, for each audio packet of a call
 * that is passthrough or transcoded by the C transcoder (media/_transcode.c), does what media/relay.py's
 * MediaPath.forward does in Python: flood bound (token bucket), SRTP unprotect (WebRTC leg) or header
 * validation (trunk leg, RFC 3550 A.1), reception statistics (A.1, A.8), transcoding if any, the
 * translator's header rewrite (RFC 3550 s7: SSRC, sequence, timestamp, payload type), SRTP protect, send,
 * sender statistics. Anything else (STUN, DTLS, RTCP, telephone-event, a new source address, a muted
 * path, a path with the Python transcoder) goes up to Python callbacks unchanged, so all control logic
 * stays there.
 *
 * Rewriter, Reception and Sending are the same state objects the Python relay uses (drop-in for
 * media.rewriter.StreamRewriter and media.rtcp's ReceptionStats/SendingStats): the Python and C paths share
 * one state, never a copy. Everything runs on the event loop's thread with the GIL held.
 *
 * SRTP is libsrtp 2 through pylibsrtp's own copy: Python hands us the srtp_t of pylibsrtp's sessions and
 * the addresses of srtp_protect/srtp_unprotect from its cffi binding, so no second libsrtp is linked.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "_transcode.h"

#define MAX_PACKET 1500
#define SRTP_TRAILER 144 /* SRTP_MAX_TRAILER_LEN: auth tag + MKI room libsrtp may append */
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define BATCH_PER_SOCKET 32
#define MAX_EVENTS 256

typedef int (*srtp_fn)(void *ctx, void *packet, int *len);

static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock time.monotonic() reads on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint32_t random32(void) {
    uint32_t value = 0;
    if (getrandom(&value, sizeof value, 0) != sizeof value) {
        value = (uint32_t)rand();
    }
    return value;
}

static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) {
        q--;
    }
    return q;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Rewriter: one direction's translator state (mirror of media/rewriter.py, which documents the rules).  */
/* ---------------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    int16_t pt_map[128];
    PyObject *payload_types;
    uint32_t ssrc;
    int64_t in_rate, out_rate;
    int ratio_same;
    long frame_samples;
    uint16_t last_out_seq;
    uint32_t last_timestamp;
    int64_t in_ssrc; /* -1: no source yet, or restart() */
    uint32_t in_base_ts, out_base_ts;
    uint16_t seq_offset, last_in_seq;
    double last_time;
    int started;
    long long rewritten, dropped_payload_type, source_changes;
} Rewriter;

static void rw_switch_source(Rewriter *self, uint32_t ssrc, uint16_t seq, uint32_t ts, double now) {
    int64_t advance;
    if (self->started) {
        self->source_changes++;
        int64_t gap = (int64_t)rint((now - self->last_time) * (double)self->out_rate);
        advance = gap > self->frame_samples ? gap : self->frame_samples;
    } else {
        advance = self->last_time != 0.0 ? self->frame_samples : 0;
        self->started = 1;
    }
    self->in_ssrc = ssrc;
    self->in_base_ts = ts;
    self->out_base_ts = (uint32_t)((uint64_t)self->last_timestamp + (uint64_t)advance);
    self->seq_offset = (uint16_t)(self->last_out_seq + 1 - seq);
    self->last_in_seq = seq;
}

/* Rewrite a packet's 12-byte header in place; 0 means drop it (payload type not mapped). */
static int rw_rewrite(Rewriter *self, uint8_t *p, double now) {
    uint8_t first = p[0], second = p[1];
    uint16_t seq = (uint16_t)((p[2] << 8) | p[3]);
    uint32_t ts = be32(p + 4), ssrc = be32(p + 8);
    int out_pt = self->pt_map[second & 0x7F];
    if (out_pt < 0) {
        self->dropped_payload_type++;
        return 0;
    }
    int marker = second & 0x80;
    if ((int64_t)ssrc != self->in_ssrc) {
        rw_switch_source(self, ssrc, seq, ts, now);
        marker = 0x80;
    } else {
        int delta = (uint16_t)(seq - self->last_in_seq);
        if (delta >= 0x8000) {
            delta -= 0x10000;
        }
        if (delta > MAX_DROPOUT || delta < -MAX_MISORDER) {
            rw_switch_source(self, ssrc, seq, ts, now);
            marker = 0x80;
        } else if (delta > 0) {
            self->last_in_seq = seq;
        }
    }
    uint16_t out_seq = (uint16_t)(seq + self->seq_offset);
    int64_t elapsed = (uint32_t)(ts - self->in_base_ts);
    if (elapsed >= 0x80000000LL) {
        elapsed -= 0x100000000LL;
    }
    if (!self->ratio_same) {
        elapsed = floor_div(elapsed * self->out_rate, self->in_rate);
    }
    uint32_t out_ts = (uint32_t)((uint64_t)self->out_base_ts + (uint64_t)elapsed);
    if ((uint16_t)(out_seq - self->last_out_seq) < 0x8000) {
        self->last_out_seq = out_seq;
        self->last_timestamp = out_ts;
        self->last_time = now;
    }
    p[0] = first;
    p[1] = (uint8_t)(marker | out_pt);
    p[2] = (uint8_t)(out_seq >> 8);
    p[3] = (uint8_t)out_seq;
    put32(p + 4, out_ts);
    put32(p + 8, self->ssrc);
    self->rewritten++;
    return 1;
}

static int Rewriter_init(Rewriter *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"payload_types", "ssrc", "in_rate", "out_rate", "frame_samples",
                             "initial_sequence", "initial_timestamp", NULL};
    PyObject *payload_types, *ssrc = Py_None, *frame_samples = Py_None, *initial_sequence = Py_None,
                             *initial_timestamp = Py_None;
    long long in_rate = 8000, out_rate = 8000;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|$OLLOOO", kwlist, &PyDict_Type, &payload_types, &ssrc,
                                     &in_rate, &out_rate, &frame_samples, &initial_sequence,
                                     &initial_timestamp)) {
        return -1;
    }
    if (in_rate <= 0 || out_rate <= 0) {
        PyErr_SetString(PyExc_ValueError, "clock rates must be positive");
        return -1;
    }
    for (int i = 0; i < 128; i++) {
        self->pt_map[i] = -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(payload_types, &pos, &key, &value)) {
        long in_pt = PyLong_AsLong(key), out_pt = PyLong_AsLong(value);
        if (PyErr_Occurred()) {
            return -1;
        }
        if (in_pt < 0 || in_pt > 127 || out_pt < 0 || out_pt > 127) {
            PyErr_Format(PyExc_ValueError, "payload type out of range: %ld -> %ld", in_pt, out_pt);
            return -1;
        }
        self->pt_map[in_pt] = (int16_t)out_pt;
    }
    Py_INCREF(payload_types);
    Py_XSETREF(self->payload_types, payload_types);
    self->ssrc = ssrc == Py_None ? random32() : (uint32_t)PyLong_AsUnsignedLongLongMask(ssrc);
    self->in_rate = in_rate;
    self->out_rate = out_rate;
    self->ratio_same = in_rate == out_rate;
    self->frame_samples = frame_samples == Py_None ? (long)(out_rate / 50) : PyLong_AsLong(frame_samples);
    long long first_seq = initial_sequence == Py_None ? (long long)(random32() & 0xFFFF)
                                                      : PyLong_AsLongLong(initial_sequence);
    self->last_out_seq = (uint16_t)(first_seq - 1);
    self->last_timestamp = initial_timestamp == Py_None
                               ? random32()
                               : (uint32_t)PyLong_AsUnsignedLongLongMask(initial_timestamp);
    if (PyErr_Occurred()) {
        return -1;
    }
    self->in_ssrc = -1;
    self->in_base_ts = self->out_base_ts = 0;
    self->seq_offset = self->last_in_seq = 0;
    self->last_time = 0.0;
    self->started = 0;
    self->rewritten = self->dropped_payload_type = self->source_changes = 0;
    return 0;
}

static void Rewriter_dealloc(Rewriter *self) {
    Py_XDECREF(self->payload_types);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Rewriter_rewrite(Rewriter *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "rewrite(packet, now)");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (view.len < 12) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "RTP packet shorter than its fixed header");
        return NULL;
    }
    int kept = rw_rewrite(self, (uint8_t *)view.buf, now);
    PyBuffer_Release(&view);
    return PyBool_FromLong(kept);
}

static PyObject *Rewriter_next_timestamp(Rewriter *self, PyObject *arg) {
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    uint16_t seq = (uint16_t)(self->last_out_seq + 1);
    int64_t advance = (int64_t)rint((now - self->last_time) * (double)self->out_rate);
    if (advance < 0) {
        advance = 0;
    }
    uint32_t ts = (uint32_t)((uint64_t)self->last_timestamp + (uint64_t)advance);
    self->last_out_seq = seq;
    self->last_timestamp = ts;
    self->last_time = now;
    return Py_BuildValue("(ik)", (int)seq, (unsigned long)ts);
}

static PyObject *Rewriter_restart(Rewriter *self, PyObject *Py_UNUSED(ignored)) {
    self->in_ssrc = -1;
    Py_RETURN_NONE;
}

static PyObject *Rewriter_get_last_sequence(Rewriter *self, void *closure) {
    return PyLong_FromLong(self->last_out_seq);
}

static PyObject *Rewriter_get_ssrc(Rewriter *self, void *closure) {
    return PyLong_FromUnsignedLong(self->ssrc);
}

static int Rewriter_set_ssrc(Rewriter *self, PyObject *value, void *closure) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete ssrc");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLongMask(value);
    if (PyErr_Occurred()) {
        return -1;
    }
    self->ssrc = (uint32_t)v;
    return 0;
}

static PyObject *Rewriter_get_last_timestamp(Rewriter *self, void *closure) {
    return PyLong_FromUnsignedLong(self->last_timestamp);
}

static int Rewriter_set_last_timestamp(Rewriter *self, PyObject *value, void *closure) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete last_timestamp");
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLongMask(value);
    if (PyErr_Occurred()) {
        return -1;
    }
    self->last_timestamp = (uint32_t)v;
    return 0;
}

static PyMethodDef Rewriter_methods[] = {
    {"rewrite", (PyCFunction)(void (*)(void))Rewriter_rewrite, METH_FASTCALL,
     "Rewrite packet's header in place for the outgoing stream; False means drop it."},
    {"next_timestamp", (PyCFunction)Rewriter_next_timestamp, METH_O,
     "(sequence, timestamp) for a packet we originate now, continuing the stream."},
    {"restart", (PyCFunction)Rewriter_restart, METH_NOARGS,
     "Make the next relayed packet start a new mapping."},
    {NULL},
};

static PyMemberDef Rewriter_members[] = {
    {"payload_types", T_OBJECT_EX, offsetof(Rewriter, payload_types), READONLY, NULL},
    {"frame_samples", T_LONG, offsetof(Rewriter, frame_samples), 0, NULL},
    {"rewritten", T_LONGLONG, offsetof(Rewriter, rewritten), READONLY, NULL},
    {"dropped_payload_type", T_LONGLONG, offsetof(Rewriter, dropped_payload_type), READONLY, NULL},
    {"source_changes", T_LONGLONG, offsetof(Rewriter, source_changes), READONLY, NULL},
    {NULL},
};

static PyGetSetDef Rewriter_getset[] = {
    {"last_sequence", (getter)Rewriter_get_last_sequence, NULL, NULL, NULL},
    {"ssrc", (getter)Rewriter_get_ssrc, (setter)Rewriter_set_ssrc, NULL, NULL},
    {"last_timestamp", (getter)Rewriter_get_last_timestamp, (setter)Rewriter_set_last_timestamp, NULL, NULL},
    {NULL},
};

static PyTypeObject RewriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._fastpath.Rewriter",
    .tp_basicsize = sizeof(Rewriter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One direction's RTP translator state (see media.rewriter.StreamRewriter).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Rewriter_init,
    .tp_dealloc = (destructor)Rewriter_dealloc,
    .tp_methods = Rewriter_methods,
    .tp_members = Rewriter_members,
    .tp_getset = Rewriter_getset,
};

/* ---------------------------------------------------------------------------------------------------- */
/* Reception: statistics of the stream a leg sends us (RFC 3550 A.1 sequence, A.3 loss, A.8 jitter).    */
/* ---------------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    long long clock_rate;
    long long remote_ssrc; /* -1: none yet */
    long long base_seq, max_seq, cycles, received, expected_prior, received_prior, packets_received;
    double jitter, transit;
    int has_transit;
} Reception;

static void reception_update(Reception *self, uint32_t ssrc, uint16_t seq, uint32_t ts, double now) {
    if ((long long)ssrc != self->remote_ssrc) {
        self->remote_ssrc = ssrc;
        self->base_seq = self->max_seq = seq;
        self->cycles = 0;
        self->received = 0;
        self->expected_prior = self->received_prior = 0;
        self->has_transit = 0;
    } else {
        uint16_t delta = (uint16_t)(seq - self->max_seq);
        if (delta > 0 && delta < 0x8000) {
            if (seq < self->max_seq) {
                self->cycles += 0x10000;
            }
            self->max_seq = seq;
        }
    }
    self->received++;
    self->packets_received++;
    double transit = now * (double)self->clock_rate - (double)ts;
    if (self->has_transit) {
        double d = fabs(transit - self->transit);
        if (d < (double)(self->clock_rate * 10)) { /* ignore timestamp jumps (source restarts) */
            self->jitter += (d - self->jitter) / 16;
        }
    }
    self->transit = transit;
    self->has_transit = 1;
}

static int Reception_init(Reception *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"clock_rate", NULL};
    long long clock_rate;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L", kwlist, &clock_rate)) {
        return -1;
    }
    if (clock_rate <= 0) {
        PyErr_SetString(PyExc_ValueError, "clock rate must be positive");
        return -1;
    }
    self->clock_rate = clock_rate;
    self->remote_ssrc = -1;
    self->base_seq = self->max_seq = self->cycles = self->received = 0;
    self->expected_prior = self->received_prior = self->packets_received = 0;
    self->jitter = self->transit = 0.0;
    self->has_transit = 0;
    return 0;
}

static PyObject *Reception_on_rtp_received(Reception *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "on_rtp_received(ssrc, seq, timestamp, now)");
        return NULL;
    }
    unsigned long long ssrc = PyLong_AsUnsignedLongLongMask(args[0]);
    unsigned long long seq = PyLong_AsUnsignedLongLongMask(args[1]);
    unsigned long long ts = PyLong_AsUnsignedLongLongMask(args[2]);
    double now = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    reception_update(self, (uint32_t)ssrc, (uint16_t)seq, (uint32_t)ts, now);
    Py_RETURN_NONE;
}

static PyObject *Reception_get_remote_ssrc(Reception *self, void *closure) {
    if (self->remote_ssrc < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(self->remote_ssrc);
}

static PyMethodDef Reception_methods[] = {
    {"on_rtp_received", (PyCFunction)(void (*)(void))Reception_on_rtp_received, METH_FASTCALL,
     "Count a received packet and update the interarrival jitter."},
    {NULL},
};

static PyMemberDef Reception_members[] = {
    {"clock_rate", T_LONGLONG, offsetof(Reception, clock_rate), READONLY, NULL},
    {"base_seq", T_LONGLONG, offsetof(Reception, base_seq), 0, NULL},
    {"max_seq", T_LONGLONG, offsetof(Reception, max_seq), 0, NULL},
    {"cycles", T_LONGLONG, offsetof(Reception, cycles), 0, NULL},
    {"received", T_LONGLONG, offsetof(Reception, received), 0, NULL},
    {"expected_prior", T_LONGLONG, offsetof(Reception, expected_prior), 0, NULL},
    {"received_prior", T_LONGLONG, offsetof(Reception, received_prior), 0, NULL},
    {"packets_received", T_LONGLONG, offsetof(Reception, packets_received), 0, NULL},
    {"jitter", T_DOUBLE, offsetof(Reception, jitter), 0, NULL},
    {NULL},
};

static PyGetSetDef Reception_getset[] = {
    {"remote_ssrc", (getter)Reception_get_remote_ssrc, NULL, NULL, NULL},
    {NULL},
};

static PyTypeObject ReceptionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._fastpath.Reception",
    .tp_basicsize = sizeof(Reception),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Reception statistics of one incoming RTP stream (see media.rtcp.ReceptionStats).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reception_init,
    .tp_methods = Reception_methods,
    .tp_members = Reception_members,
    .tp_getset = Reception_getset,
};

/* ---------------------------------------------------------------------------------------------------- */
/* Sending: what an SR says about the stream we send (RFC 3550 s6.4.1).                                  */
/* ---------------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    long long packets, octets;
    unsigned long long last_rtp_ts;
    double last_send_time;
} Sending;

static inline void sending_update(Sending *self, uint32_t ts, long long size, double now) {
    self->packets++;
    self->octets += size;
    self->last_rtp_ts = ts;
    self->last_send_time = now;
}

static PyObject *Sending_on_rtp_sent(Sending *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "on_rtp_sent(timestamp, payload_size, now)");
        return NULL;
    }
    unsigned long long ts = PyLong_AsUnsignedLongLongMask(args[0]);
    long long size = PyLong_AsLongLong(args[1]);
    double now = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    sending_update(self, (uint32_t)ts, size, now);
    Py_RETURN_NONE;
}

static PyMethodDef Sending_methods[] = {
    {"on_rtp_sent", (PyCFunction)(void (*)(void))Sending_on_rtp_sent, METH_FASTCALL,
     "Count a packet we sent."},
    {NULL},
};

static PyMemberDef Sending_members[] = {
    {"packets", T_LONGLONG, offsetof(Sending, packets), 0, NULL},
    {"octets", T_LONGLONG, offsetof(Sending, octets), 0, NULL},
    {"last_rtp_ts", T_ULONGLONG, offsetof(Sending, last_rtp_ts), 0, NULL},
    {"last_send_time", T_DOUBLE, offsetof(Sending, last_send_time), 0, NULL},
    {NULL},
};

static PyTypeObject SendingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._fastpath.Sending",
    .tp_basicsize = sizeof(Sending),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sender statistics of one outgoing RTP stream (see media.rtcp.SendingStats).",
    .tp_new = PyType_GenericNew,
    .tp_methods = Sending_methods,
    .tp_members = Sending_members,
};

/* ---------------------------------------------------------------------------------------------------- */
/* Leg: one call leg's socket in the pump, and where its packets go.                                     */
/* ---------------------------------------------------------------------------------------------------- */
enum { KIND_TRUNK = 0, KIND_WEBRTC = 1 };

typedef struct Leg {
    PyObject_HEAD
    int fd;
    int kind;
    int closed;
    int epfd; /* the pump's; -1 once removed */
    struct sockaddr_storage remote;
    socklen_t remote_len;
    int latched; /* trunk: packets from ``remote`` may take the fast path (symmetric RTP, RFC 4961) */
    double last_from_remote; /* trunk: when the fast path last relayed a packet from ``remote`` */
    void *rx_ctx, *tx_ctx;
    srtp_fn unprotect, protect;
    double rate, burst, tokens, last;
    long long rtp_received, sent, flood_dropped, unauthenticated, malformed, send_errors;
    PyObject *on_slow;  /* (data: bytes, addr) for what C does not relay */
    PyObject *on_rtcp;  /* WebRTC: (srtcp: bytes, now) */
    PyObject *on_clear; /* WebRTC: (rtp: bytearray, now), unprotected RTP for the Python relay */
    PyObject *holder;   /* the pump's set of legs (drops our reference on close) */
    /* Route: packets arriving here, when ``fast``, go out on ``out`` rewritten by ``rewriter``. */
    struct Leg *out;
    Rewriter *rewriter;
    Reception *reception;
    Sending *sending;
    int event_pt;
    Transcoder *transcoder; /* set when this direction is transcoded: packets of ``audio_pt`` go through it */
    int audio_pt;
    int fast;
    uint8_t buffer[MAX_PACKET + SRTP_TRAILER];
} Leg;

static PyTypeObject LegType;

static int parse_address(PyObject *host, int port, struct sockaddr_storage *out, socklen_t *len) {
    const char *text = PyUnicode_AsUTF8(host);
    if (text == NULL) {
        return -1;
    }
    if (port < 0 || port > 65535) {
        PyErr_Format(PyExc_ValueError, "bad port %d", port);
        return -1;
    }
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof *v6;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "not an IP address: %R", host);
    return -1;
}

static PyObject *address_tuple(const struct sockaddr_storage *addr) {
    char text[INET6_ADDRSTRLEN];
    if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
        return Py_BuildValue("(sikk)", text, (int)ntohs(v6->sin6_port), (unsigned long)ntohl(v6->sin6_flowinfo),
                             (unsigned long)v6->sin6_scope_id);
    }
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
    return Py_BuildValue("(si)", text, (int)ntohs(v4->sin_port));
}

static int same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) {
        return 0;
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
}

static int bucket_allow(Leg *leg, double now) {
    double tokens = leg->tokens + (now - leg->last) * leg->rate;
    leg->last = now;
    if (tokens > leg->burst) {
        tokens = leg->burst;
    }
    if (tokens < 1.0) {
        leg->tokens = tokens;
        return 0;
    }
    leg->tokens = tokens - 1.0;
    return 1;
}

/* Send a clear RTP packet in ``buf`` (with SRTP_TRAILER bytes of room after ``len``) on this leg. */
static void leg_send(Leg *leg, uint8_t *buf, int len) {
    if (leg->closed || !leg->remote_len) {
        return;
    }
    if (leg->kind == KIND_WEBRTC) {
        int size = len;
        if (leg->protect(leg->tx_ctx, buf, &size) != 0) {
            leg->send_errors++;
            return;
        }
        len = size;
    }
    if (sendto(leg->fd, buf, (size_t)len, 0, (struct sockaddr *)&leg->remote, leg->remote_len) < 0) {
        leg->send_errors++;
        return;
    }
    leg->sent++;
}

static void call_back(PyObject *callback, PyObject *args) {
    if (args == NULL) {
        PyErr_WriteUnraisable(callback);
        return;
    }
    PyObject *result = PyObject_CallObject(callback, args);
    Py_DECREF(args);
    if (result == NULL) {
        PyErr_WriteUnraisable(callback);
    } else {
        Py_DECREF(result);
    }
}

/* A transcoded direction: the transcoder's packets (concealed ones first) rewritten and sent, as
 * media/relay.py's MediaPath.forward does for the Python transcoder. */
static void leg_transcode(Leg *leg, const uint8_t *p, int start, int end, double now) {
    static TcPacket out[TC_MAX_OUT]; /* the pump runs with the GIL held: one caller at a time */
    int count = tc_transcode(leg->transcoder, p, start, end, out);
    for (int i = 0; i < count; i++) {
        if (rw_rewrite(leg->rewriter, out[i].data, now)) {
            leg_send(leg->out, out[i].data, out[i].len);
            sending_update(leg->sending, leg->rewriter->last_timestamp, out[i].len - 12, now);
        }
    }
}

/* The fast path proper: relay one valid clear RTP packet (payload at p[start:end]) if its route allows;
 * 1 if done. */
static int leg_forward(Leg *leg, uint8_t *p, int len, int start, int end, double now) {
    Leg *out = leg->out;
    if (!leg->fast || out == NULL || out->closed || !out->remote_len) {
        return 0;
    }
    int pt = p[1] & 0x7F;
    if (pt == leg->event_pt || leg->rewriter->pt_map[pt] < 0) {
        return 0;
    }
    reception_update(leg->reception, be32(p + 8), (uint16_t)((p[2] << 8) | p[3]), be32(p + 4), now);
    leg->rtp_received++;
    if (leg->transcoder != NULL && pt == leg->audio_pt) {
        leg_transcode(leg, p, start, end, now);
        return 1;
    }
    if (rw_rewrite(leg->rewriter, p, now)) {
        leg_send(out, p, len);
        sending_update(leg->sending, leg->rewriter->last_timestamp, len - 12, now);
    }
    return 1;
}

static void leg_packet(Leg *leg, int len, struct sockaddr_storage *from, double now) {
    uint8_t *p = leg->buffer;
    int media = len > 0 && p[0] > 127 && p[0] < 192; /* RFC 7983 s7: RTP/RTCP */
    if (leg->kind == KIND_WEBRTC) {
        if (!media) { /* STUN, DTLS: aioice and aiortc */
            call_back(leg->on_slow, Py_BuildValue("(y#N)", (const char *)p, (Py_ssize_t)len, address_tuple(from)));
            return;
        }
        if (!bucket_allow(leg, now)) {
            leg->flood_dropped++;
            return;
        }
        if (len >= 2 && p[1] >= 192 && p[1] <= 223) { /* RFC 5761 s4: RTCP */
            call_back(leg->on_rtcp, Py_BuildValue("(y#d)", (const char *)p, (Py_ssize_t)len, now));
            return;
        }
        int size = len;
        if (leg->unprotect(leg->rx_ctx, p, &size) != 0) {
            leg->unauthenticated++;
            return;
        }
        int start, end; /* RFC 3550 A.1 validity, and where the payload is */
        if (!rtp_payload_bounds(p, size, MAX_PACKET, &start, &end)) {
            leg->malformed++;
            return;
        }
        if (leg_forward(leg, p, size, start, end, now)) {
            return;
        }
        PyObject *clear = PyByteArray_FromStringAndSize((const char *)p, size);
        call_back(leg->on_clear, clear == NULL ? NULL : Py_BuildValue("(Nd)", clear, now));
        return;
    }
    if (!bucket_allow(leg, now)) {
        leg->flood_dropped++;
        return;
    }
    if (leg->latched && media && !(len >= 2 && p[1] >= 192 && p[1] <= 223) && same_address(from, &leg->remote)) {
        int start, end;
        if (!rtp_payload_bounds(p, len, MAX_PACKET, &start, &end)) {
            leg->malformed++;
            return;
        }
        if (leg_forward(leg, p, len, start, end, now)) {
            leg->last_from_remote = now;
            return;
        }
    }
    /* RTCP on a muxed port, a new source to latch to, anything odd: the Python leg decides. */
    call_back(leg->on_slow, Py_BuildValue("(y#Nd)", (const char *)p, (Py_ssize_t)len, address_tuple(from), now));
}

static void leg_clear_route(Leg *leg) {
    Py_CLEAR(leg->out);
    Py_CLEAR(leg->rewriter);
    Py_CLEAR(leg->reception);
    Py_CLEAR(leg->sending);
    Py_CLEAR(leg->transcoder);
    leg->fast = 0;
}

static void leg_close(Leg *leg) {
    if (leg->closed) {
        return;
    }
    leg->closed = 1;
    if (leg->epfd >= 0) {
        epoll_ctl(leg->epfd, EPOLL_CTL_DEL, leg->fd, NULL);
        leg->epfd = -1;
    }
    close(leg->fd);
    leg->fd = -1;
    leg_clear_route(leg);
    Py_CLEAR(leg->on_slow);
    Py_CLEAR(leg->on_rtcp);
    Py_CLEAR(leg->on_clear);
    if (leg->holder != NULL) {
        PyObject *holder = leg->holder;
        leg->holder = NULL;
        if (PySet_Discard(holder, (PyObject *)leg) < 0) {
            PyErr_WriteUnraisable(holder);
        }
        Py_DECREF(holder);
    }
}

static int Leg_traverse(Leg *self, visitproc visit, void *arg) {
    Py_VISIT(self->on_slow);
    Py_VISIT(self->on_rtcp);
    Py_VISIT(self->on_clear);
    Py_VISIT(self->holder);
    Py_VISIT(self->out);
    Py_VISIT(self->rewriter);
    Py_VISIT(self->reception);
    Py_VISIT(self->sending);
    Py_VISIT(self->transcoder);
    return 0;
}

static int Leg_clear(Leg *self) {
    leg_clear_route(self);
    Py_CLEAR(self->on_slow);
    Py_CLEAR(self->on_rtcp);
    Py_CLEAR(self->on_clear);
    Py_CLEAR(self->holder);
    return 0;
}

static void Leg_dealloc(Leg *self) {
    PyObject_GC_UnTrack(self);
    if (!self->closed && self->fd >= 0) {
        if (self->epfd >= 0) {
            epoll_ctl(self->epfd, EPOLL_CTL_DEL, self->fd, NULL);
        }
        close(self->fd);
    }
    Leg_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Leg_set_route(Leg *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"out", "rewriter", "reception", "sending", "event_pt", "transcoder", "audio_pt", NULL};
    Leg *out;
    Rewriter *rewriter;
    Reception *reception;
    Sending *sending;
    int event_pt, audio_pt = -1;
    PyObject *transcoder = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!i|$Oi", kwlist, &LegType, &out, &RewriterType, &rewriter,
                                     &ReceptionType, &reception, &SendingType, &sending, &event_pt, &transcoder,
                                     &audio_pt)) {
        return NULL;
    }
    if (transcoder != Py_None && !PyObject_TypeCheck(transcoder, &TranscoderType)) {
        PyErr_Format(PyExc_TypeError, "transcoder must be a media._fastpath.Transcoder, not %R", transcoder);
        return NULL;
    }
    leg_clear_route(self);
    if (transcoder != Py_None) {
        Py_INCREF(transcoder);
        self->transcoder = (Transcoder *)transcoder;
    }
    self->audio_pt = audio_pt;
    Py_INCREF(out);
    Py_INCREF(rewriter);
    Py_INCREF(reception);
    Py_INCREF(sending);
    self->out = out;
    self->rewriter = rewriter;
    self->reception = reception;
    self->sending = sending;
    self->event_pt = event_pt;
    Py_RETURN_NONE;
}

static PyObject *Leg_set_remote(Leg *self, PyObject *args) {
    PyObject *host;
    int port;
    if (!PyArg_ParseTuple(args, "Ui", &host, &port)) {
        return NULL;
    }
    struct sockaddr_storage addr;
    socklen_t len;
    if (parse_address(host, port, &addr, &len) < 0) {
        self->remote_len = 0; /* unknown: the Python leg keeps sending (and the fast path stops) */
        return NULL;
    }
    self->remote = addr;
    self->remote_len = len;
    Py_RETURN_NONE;
}

static PyObject *Leg_clear_remote(Leg *self, PyObject *Py_UNUSED(ignored)) {
    self->remote_len = 0;
    self->latched = 0;
    Py_RETURN_NONE;
}

static PyObject *Leg_send_rtp(Leg *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len > MAX_PACKET) {
        PyBuffer_Release(&view);
        self->send_errors++;
        Py_RETURN_NONE;
    }
    uint8_t buf[MAX_PACKET + SRTP_TRAILER];
    memcpy(buf, view.buf, (size_t)view.len);
    int len = (int)view.len;
    PyBuffer_Release(&view);
    leg_send(self, buf, len);
    Py_RETURN_NONE;
}

static PyObject *Leg_sendto(Leg *self, PyObject *args) {
    Py_buffer view;
    PyObject *addr = Py_None;
    if (!PyArg_ParseTuple(args, "y*|O", &view, &addr)) {
        return NULL;
    }
    struct sockaddr_storage target = self->remote;
    socklen_t target_len = self->remote_len;
    if (addr != Py_None) {
        /* (host, port) or an IPv6 four-tuple, as asyncio's sendto takes. */
        if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2 || !PyUnicode_Check(PyTuple_GET_ITEM(addr, 0))) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_TypeError, "address must be (host, port), not %R", addr);
            return NULL;
        }
        long port = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
        if ((port == -1 && PyErr_Occurred()) ||
            parse_address(PyTuple_GET_ITEM(addr, 0), (int)port, &target, &target_len) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    if (self->closed || !target_len) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    if (sendto(self->fd, view.buf, (size_t)view.len, 0, (struct sockaddr *)&target, target_len) < 0) {
        self->send_errors++;
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyObject *Leg_counters(Leg *self, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("{sLsLsLsLsLsL}", "rtp_received", self->rtp_received, "sent", self->sent,
                         "flood_dropped", self->flood_dropped, "unauthenticated", self->unauthenticated,
                         "malformed", self->malformed, "send_errors", self->send_errors);
}

static PyObject *Leg_close(Leg *self, PyObject *Py_UNUSED(ignored)) {
    leg_close(self);
    Py_RETURN_NONE;
}

static PyObject *Leg_fileno(Leg *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(self->fd);
}

static PyMethodDef Leg_methods[] = {
    {"set_route", (PyCFunction)(void (*)(void))Leg_set_route, METH_VARARGS | METH_KEYWORDS,
     "Where this leg's packets go: out leg, rewriter, stats, event payload type; for a transcoded "
     "direction the transcoder and the audio payload type it takes."},
    {"set_remote", (PyCFunction)Leg_set_remote, METH_VARARGS, "The address media is sent to."},
    {"clear_remote", (PyCFunction)Leg_clear_remote, METH_NOARGS, "No address to send to."},
    {"send_rtp", (PyCFunction)Leg_send_rtp, METH_O, "Send a clear RTP packet (protected on WebRTC)."},
    {"sendto", (PyCFunction)Leg_sendto, METH_VARARGS, "Send a datagram as is (STUN, SRTCP, RTCP)."},
    {"counters", (PyCFunction)Leg_counters, METH_NOARGS, "What this leg counted in C."},
    {"close", (PyCFunction)Leg_close, METH_NOARGS, "Leave the pump and close the socket."},
    {"fileno", (PyCFunction)Leg_fileno, METH_NOARGS, NULL},
    {NULL},
};

static PyMemberDef Leg_members[] = {
    {"fast", T_INT, offsetof(Leg, fast), 0, "Relay this leg's audio packets in C (see set_route)."},
    {"latched", T_INT, offsetof(Leg, latched), 0, "Trunk: media from the remote address takes the fast path."},
    {"closed", T_INT, offsetof(Leg, closed), READONLY, NULL},
    {"last_from_remote", T_DOUBLE, offsetof(Leg, last_from_remote), READONLY,
     "Trunk: when media from the latched source last went through the C path (for re-latching)."},
    {NULL},
};

static PyTypeObject LegType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._fastpath.Leg",
    .tp_basicsize = sizeof(Leg),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A call leg's socket in the pump (made by Pump.add_trunk / Pump.add_webrtc).",
    .tp_dealloc = (destructor)Leg_dealloc,
    .tp_traverse = (traverseproc)Leg_traverse,
    .tp_clear = (inquiry)Leg_clear,
    .tp_methods = Leg_methods,
    .tp_members = Leg_members,
};

/* ---------------------------------------------------------------------------------------------------- */
/* Pump: the epoll set asyncio watches.                                                                  */
/* ---------------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    int epfd;
    PyObject *legs; /* set: keeps every open leg alive while its socket is in the epoll set */
    long long runs, packets;
} Pump;

static int Pump_init(Pump *self, PyObject *args, PyObject *kwds) {
    if (!PyArg_ParseTuple(args, "")) {
        return -1;
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->legs = PySet_New(NULL);
    return self->legs == NULL ? -1 : 0;
}

static int Pump_traverse(Pump *self, visitproc visit, void *arg) {
    Py_VISIT(self->legs);
    return 0;
}

static int Pump_clear(Pump *self) {
    Py_CLEAR(self->legs);
    return 0;
}

static void pump_close(Pump *self) {
    if (self->legs != NULL) {
        PyObject *legs = PySequence_List(self->legs);
        if (legs == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        } else {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(legs); i++) {
                leg_close((Leg *)PyList_GET_ITEM(legs, i));
            }
            Py_DECREF(legs);
        }
    }
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
}

static void Pump_dealloc(Pump *self) {
    PyObject_GC_UnTrack(self);
    pump_close(self); /* no leg may outlive the epoll set it is registered in */
    Pump_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Leg *pump_add(Pump *self, int fd, int kind, double rate, double burst) {
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "pump is closed");
        return NULL;
    }
    if (rate <= 0 || burst < 1) {
        PyErr_SetString(PyExc_ValueError, "flood bound must allow at least one packet");
        return NULL;
    }
    Leg *leg = PyObject_GC_New(Leg, &LegType);
    if (leg == NULL) {
        return NULL;
    }
    memset((char *)leg + sizeof(PyObject), 0, offsetof(Leg, buffer) - sizeof(PyObject));
    leg->fd = fd;
    leg->kind = kind;
    leg->epfd = -1;
    leg->event_pt = -1;
    leg->rate = rate;
    leg->burst = burst;
    leg->tokens = burst;
    PyObject_GC_Track(leg);
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = leg};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &event) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        leg->fd = -1;
        leg->closed = 1;
        Py_DECREF(leg);
        return NULL;
    }
    leg->epfd = self->epfd;
    if (PySet_Add(self->legs, (PyObject *)leg) < 0) {
        /* As for every failure here, the caller still owns (and closes) fd. */
        epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL);
        leg->epfd = -1;
        leg->fd = -1;
        leg->closed = 1;
        Py_DECREF(leg);
        return NULL;
    }
    Py_INCREF(self->legs);
    leg->holder = self->legs;
    return leg;
}

static PyObject *Pump_add_trunk(Pump *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "on_slow", "rate", "burst", NULL};
    int fd;
    PyObject *on_slow;
    double rate, burst;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOdd", kwlist, &fd, &on_slow, &rate, &burst)) {
        return NULL;
    }
    Leg *leg = pump_add(self, fd, KIND_TRUNK, rate, burst);
    if (leg == NULL) {
        return NULL;
    }
    Py_INCREF(on_slow);
    leg->on_slow = on_slow;
    return (PyObject *)leg;
}

static PyObject *Pump_add_webrtc(Pump *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "rx_context", "tx_context", "unprotect", "protect", "on_slow",
                             "on_rtcp", "on_clear", "rate", "burst", NULL};
    int fd;
    unsigned long long rx, tx, unprotect, protect;
    PyObject *on_slow, *on_rtcp, *on_clear;
    double rate, burst;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iKKKKOOOdd", kwlist, &fd, &rx, &tx, &unprotect, &protect,
                                     &on_slow, &on_rtcp, &on_clear, &rate, &burst)) {
        return NULL;
    }
    if (!rx || !tx || !unprotect || !protect) {
        PyErr_SetString(PyExc_ValueError, "SRTP contexts and functions are required");
        return NULL;
    }
    Leg *leg = pump_add(self, fd, KIND_WEBRTC, rate, burst);
    if (leg == NULL) {
        return NULL;
    }
    leg->rx_ctx = (void *)(uintptr_t)rx;
    leg->tx_ctx = (void *)(uintptr_t)tx;
    leg->unprotect = (srtp_fn)(uintptr_t)unprotect;
    leg->protect = (srtp_fn)(uintptr_t)protect;
    Py_INCREF(on_slow);
    Py_INCREF(on_rtcp);
    Py_INCREF(on_clear);
    leg->on_slow = on_slow;
    leg->on_rtcp = on_rtcp;
    leg->on_clear = on_clear;
    return (PyObject *)leg;
}

static PyObject *Pump_run(Pump *self, PyObject *Py_UNUSED(ignored)) {
    if (self->epfd < 0) {
        Py_RETURN_NONE;
    }
    struct epoll_event events[MAX_EVENTS];
    int count = epoll_wait(self->epfd, events, MAX_EVENTS, 0);
    if (count <= 0) {
        Py_RETURN_NONE;
    }
    self->runs++;
    /* A callback may close legs (ours included): hold each for the whole run. */
    for (int i = 0; i < count; i++) {
        Py_INCREF((PyObject *)events[i].data.ptr);
    }
    for (int i = 0; i < count; i++) {
        Leg *leg = (Leg *)events[i].data.ptr;
        for (int n = 0; n < BATCH_PER_SOCKET && !leg->closed; n++) {
            struct sockaddr_storage from;
            socklen_t from_len = sizeof from;
            ssize_t got = recvfrom(leg->fd, leg->buffer, MAX_PACKET, MSG_TRUNC, (struct sockaddr *)&from, &from_len);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    break;
                }
                if (errno != EINTR) {
                    leg->send_errors++; /* ICMP port unreachable from a peer not listening yet */
                }
                continue;
            }
            if (got > MAX_PACKET) {
                leg->malformed++;
                continue;
            }
            self->packets++;
            leg_packet(leg, (int)got, &from, monotonic_now());
        }
    }
    for (int i = 0; i < count; i++) {
        Py_DECREF((PyObject *)events[i].data.ptr);
    }
    Py_RETURN_NONE;
}

static PyObject *Pump_fileno(Pump *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(self->epfd);
}

static PyObject *Pump_close(Pump *self, PyObject *Py_UNUSED(ignored)) {
    pump_close(self);
    Py_RETURN_NONE;
}

static Py_ssize_t Pump_len(Pump *self) {
    return self->legs == NULL ? 0 : PySet_GET_SIZE(self->legs);
}

static PyMethodDef Pump_methods[] = {
    {"add_trunk", (PyCFunction)(void (*)(void))Pump_add_trunk, METH_VARARGS | METH_KEYWORDS,
     "Take a trunk leg's RTP socket (the pump owns fd from now on)."},
    {"add_webrtc", (PyCFunction)(void (*)(void))Pump_add_webrtc, METH_VARARGS | METH_KEYWORDS,
     "Take a WebRTC leg's nominated socket with its SRTP sessions (the pump owns fd from now on)."},
    {"run", (PyCFunction)Pump_run, METH_NOARGS, "Handle every datagram waiting on the pump's sockets."},
    {"fileno", (PyCFunction)Pump_fileno, METH_NOARGS, "The epoll descriptor to watch for reading."},
    {"close", (PyCFunction)Pump_close, METH_NOARGS, "Close every leg and the epoll descriptor."},
    {NULL},
};

static PyMemberDef Pump_members[] = {
    {"runs", T_LONGLONG, offsetof(Pump, runs), READONLY, NULL},
    {"packets", T_LONGLONG, offsetof(Pump, packets), READONLY, NULL},
    {NULL},
};

static PySequenceMethods Pump_as_sequence = {.sq_length = (lenfunc)Pump_len};

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "media._fastpath.Pump",
    .tp_basicsize = sizeof(Pump),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The legs' sockets in one epoll set; call run() when fileno() is readable.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pump_init,
    .tp_dealloc = (destructor)Pump_dealloc,
    .tp_traverse = (traverseproc)Pump_traverse,
    .tp_clear = (inquiry)Pump_clear,
    .tp_methods = Pump_methods,
    .tp_members = Pump_members,
    .tp_as_sequence = &Pump_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "media._fastpath",
    .m_doc = "The relay's per-packet path in C, passthrough and transcoding (see media/fastpath.py).",
    .m_size = -1,
    .m_methods = tc_functions,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    PyTypeObject *types[] = {&RewriterType, &ReceptionType, &SendingType, &LegType, &PumpType, &TranscoderType};
    const char *names[] = {"Rewriter", "Reception", "Sending", "Leg", "Pump", "Transcoder"};
    const int count = (int)(sizeof types / sizeof types[0]);
    for (int i = 0; i < count; i++) {
        if (PyType_Ready(types[i]) < 0) {
            return NULL;
        }
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    tc_build_tables();
    PyModule_AddIntConstant(m, "MAX_PACKET", MAX_PACKET);
    return m;
}
