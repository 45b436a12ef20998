// An independent SMSC for the smpp/ tests, built on the npm `smpp` package's server.
//
//   node smsc.js --system-id ID --password PW
//
// Listens on 127.0.0.1 (free port), prints one JSON object per line on stdout:
//   {"event":"listening","port":N}
//   {"event":"bind","command":"bind_transceiver","system_id":..,"system_type":..,"ok":true}
//   {"event":"submit","message_id":"smsc-1",...,"message":"<text as the npm library decodes it>"}
//   {"event":"deliver_resp","id":..,"command_status":0}
//   {"event":"unbind"} / {"event":"closed"} / {"event":"enquire_link"}
// and reads commands as JSON lines on stdin:
//   {"cmd":"deliver","id":..,"source_addr":..,"destination_addr":..,"data_coding":0,
//    "esm_class":0,"short_message_hex":"..","tlvs":{"sar_msg_ref_num":1,...}}
//   {"cmd":"deliver","id":..,"source_addr":..,"destination_addr":..,"text":"…"}  (npm encodes)
//   {"cmd":"dlr","id":..,"message_id":..,"stat":"DELIVRD","err":"000","message_state":2,
//    "source_addr":..,"destination_addr":..}
//   {"cmd":"reject_submits","status":88,"count":2}   answer the next N submit_sm with a status
//   {"cmd":"close"}                                  drop every connection
//   {"cmd":"unbind"}                                 send unbind on every session
"use strict";

const smpp = require("smpp");
const readline = require("readline");

const args = process.argv.slice(2);
function arg(name, dflt) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
}
const SYSTEM_ID = arg("--system-id", "esme");
const PASSWORD = arg("--password", "secret");

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

let counter = 0;
let rejectStatus = 0;
let rejectCount = 0;
const sessions = new Set();
const receivers = []; // bound sessions that may receive deliver_sm, newest last

function hex(buf) {
  return Buffer.isBuffer(buf) ? buf.toString("hex") : null;
}

function describeMessage(field) {
  if (field === undefined || field === null) return { message: null, udh: [] };
  if (Buffer.isBuffer(field)) return { message: null, raw: hex(field), udh: [] };
  if (typeof field === "string") return { message: field, udh: [] };
  return { message: field.message, udh: (field.udh || []).map(hex) };
}

const server = smpp.createServer(function (session) {
  sessions.add(session);
  let bound = false;

  function onBind(command) {
    return function (pdu) {
      const ok = pdu.system_id === SYSTEM_ID && pdu.password === PASSWORD;
      out({ event: "bind", command, system_id: pdu.system_id, system_type: pdu.system_type, ok });
      if (!ok) {
        session.send(pdu.response({ command_status: smpp.ESME_RINVPASWD }));
        return;
      }
      session.send(pdu.response({ system_id: "npm-smsc" }));
      bound = true;
      if (command !== "bind_transmitter") receivers.push(session);
    };
  }
  session.on("bind_transceiver", onBind("bind_transceiver"));
  session.on("bind_transmitter", onBind("bind_transmitter"));
  session.on("bind_receiver", onBind("bind_receiver"));

  session.on("submit_sm", function (pdu) {
    if (!bound) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
      return;
    }
    if (rejectCount > 0) {
      rejectCount -= 1;
      out({ event: "submit_rejected", status: rejectStatus, destination_addr: pdu.destination_addr });
      session.send(pdu.response({ command_status: rejectStatus }));
      return;
    }
    counter += 1;
    const messageId = "smsc-" + counter;
    const sm = describeMessage(pdu.short_message);
    const payload = pdu.message_payload !== undefined ? describeMessage(pdu.message_payload) : null;
    out({
      event: "submit",
      message_id: messageId,
      source_addr: pdu.source_addr,
      destination_addr: pdu.destination_addr,
      data_coding: pdu.data_coding,
      esm_class: pdu.esm_class,
      registered_delivery: pdu.registered_delivery,
      message: sm.message,
      udh: sm.udh,
      payload: payload && payload.message,
      sar_msg_ref_num: pdu.sar_msg_ref_num,
      sar_total_segments: pdu.sar_total_segments,
      sar_segment_seqnum: pdu.sar_segment_seqnum,
    });
    session.send(pdu.response({ message_id: messageId }));
  });

  session.on("enquire_link", function (pdu) {
    out({ event: "enquire_link" });
    session.send(pdu.response());
  });

  session.on("unbind", function (pdu) {
    out({ event: "unbind" });
    session.send(pdu.response());
    session.close();
  });

  session.on("close", function () {
    sessions.delete(session);
    const i = receivers.indexOf(session);
    if (i >= 0) receivers.splice(i, 1);
    out({ event: "closed" });
  });
  session.on("error", function (e) {
    out({ event: "error", message: String(e && e.message) });
  });
});

function deliver(cmd, options) {
  const session = receivers[receivers.length - 1];
  if (!session) {
    out({ event: "deliver_failed", id: cmd.id, reason: "no receiving session" });
    return;
  }
  session.deliver_sm(options, function (resp) {
    out({ event: "deliver_resp", id: cmd.id, command_status: resp.command_status });
  });
}

readline.createInterface({ input: process.stdin }).on("line", function (line) {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    out({ event: "error", message: "bad command " + line });
    return;
  }
  if (cmd.cmd === "deliver" && cmd.text !== undefined) {
    // Let the npm library choose the encoding (GSM 03.38 or UCS-2) and encode the text itself.
    deliver(cmd, {
      source_addr: cmd.source_addr,
      destination_addr: cmd.destination_addr,
      data_coding: null,
      short_message: cmd.text,
    });
  } else if (cmd.cmd === "deliver") {
    const options = Object.assign({}, cmd.tlvs || {}, {
      source_addr: cmd.source_addr,
      destination_addr: cmd.destination_addr,
      esm_class: cmd.esm_class || 0,
      data_coding: cmd.data_coding || 0,
      short_message: Buffer.from(cmd.short_message_hex || "", "hex"),
    });
    deliver(cmd, options);
  } else if (cmd.cmd === "dlr") {
    const text =
      "id:" + cmd.message_id + " sub:001 dlvrd:" + (cmd.stat === "DELIVRD" ? "001" : "000") +
      " submit date:2311231015 done date:2311231016 stat:" + cmd.stat + " err:" + (cmd.err || "000") + " text:";
    const options = {
      source_addr: cmd.source_addr,
      destination_addr: cmd.destination_addr,
      esm_class: 0x04,
      data_coding: 0,
      short_message: Buffer.from(text, "ascii"),
      receipted_message_id: cmd.message_id,
    };
    if (cmd.message_state) options.message_state = cmd.message_state;
    deliver(cmd, options);
  } else if (cmd.cmd === "reject_submits") {
    rejectStatus = cmd.status;
    rejectCount = cmd.count;
    out({ event: "ok", cmd: cmd.cmd });
  } else if (cmd.cmd === "close") {
    for (const s of sessions) s.destroy();
    out({ event: "ok", cmd: cmd.cmd });
  } else if (cmd.cmd === "unbind") {
    for (const s of sessions) s.unbind();
    out({ event: "ok", cmd: cmd.cmd });
  }
});

process.stdin.on("end", function () {
  process.exit(0);
});

server.listen(0, "127.0.0.1", function () {
  out({ event: "listening", port: server.address().port });
});
