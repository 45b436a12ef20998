// What Element's dial pad does once it has the virtual user's DM: matrix-js-sdk's own MatrixCall places
// a legacy 1:1 voice call. Bundled for the page with esbuild by the test; results land on window.result.
import { createClient, createNewMatrixCall, CallEvent, ClientEvent, RoomEvent } from "matrix-js-sdk";

async function dominantFrequency(stream) {
  const ctx = new AudioContext();
  // Chromium only feeds WebAudio from a remote stream that is also attached to a media element.
  const audio = new Audio();
  audio.muted = true;
  audio.srcObject = stream;
  await audio.play().catch(() => {});
  const source = ctx.createMediaStreamSource(stream);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  source.connect(analyser);
  const bins = new Float32Array(analyser.frequencyBinCount);
  let best = { frequency: 0, level: -Infinity };
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 100));
    analyser.getFloatFrequencyData(bins);
    for (let b = 1; b < bins.length; b++) {
      if (bins[b] > best.level) best = { frequency: (b * ctx.sampleRate) / analyser.fftSize, level: bins[b] };
    }
  }
  return best;
}

window.placeCall = async function (baseUrl, userId, accessToken, roomId) {
  const log = [];
  const client = createClient({ baseUrl, userId, accessToken, deviceId: "CHROMIUM" });
  await new Promise((resolve) => {
    client.once(ClientEvent.Sync, (state) => resolve(state));
    client.startClient({ initialSyncLimit: 5 });
  });
  for (let i = 0; i < 50 && !client.getRoom(roomId); i++) await new Promise((r) => setTimeout(r, 100));
  const call = createNewMatrixCall(client, roomId);
  if (!call) throw new Error("matrix-js-sdk says this browser cannot make calls");
  call.on(CallEvent.State, (state) => log.push(state));
  const connected = new Promise((resolve, reject) => {
    call.on(CallEvent.State, (state) => state === "connected" && resolve());
    call.on(CallEvent.Hangup, () => reject(new Error("hung up: " + call.hangupReason)));
    call.on(CallEvent.Error, (e) => reject(e));
  });
  await call.placeVoiceCall();
  await connected;
  // The remote feed may appear a moment after "connected" (FeedsChanged): wait for it, bounded.
  for (let i = 0; i < 100 && call.getRemoteFeeds().length === 0; i++) await new Promise((r) => setTimeout(r, 50));
  const remote = call.getRemoteFeeds()[0];
  if (!remote) throw new Error("no remote feed after the call connected");
  const tone = await dominantFrequency(remote.stream);
  const dtmf = call.opponentSupportsDTMF();
  // Element's in-call dial pad: one sendDtmfDigit per key press (RFC 4733 events from RTCDTMFSender).
  // insertDTMF replaces tones still queued, so wait for each tone (100 ms + 70 ms gap) as a person would.
  const digits = "159#";
  for (const digit of digits) {
    call.sendDtmfDigit(digit);
    await new Promise((r) => setTimeout(r, 400));
  }
  await new Promise((r) => setTimeout(r, 500)); // the last digit's end packets reach the trunk
  // Hang up, and wait until the homeserver has the m.call.hangup (the page closes right after).
  const hangupSent = new Promise((resolve) => {
    const check = (ev) => {
      if (ev.getType() === "m.call.hangup" && (ev.status === null || ev.status === "sent")) resolve();
    };
    client.on(RoomEvent.Timeline, check);
    client.on(RoomEvent.LocalEchoUpdated, check);
  });
  call.hangup("user_hangup", false);
  await Promise.race([hangupSent, new Promise((r) => setTimeout(r, 10000))]);
  client.stopClient();
  window.result = { states: log, frequency: tone.frequency, level: tone.level, dtmf, digitsSent: digits };
  return window.result;
};
