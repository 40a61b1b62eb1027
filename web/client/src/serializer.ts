/**
 * Pipecat's protobuf frames, as `ProtobufFrameSerializer` from the SDK reads them, plus two
 * things its generated schema leaves out:
 *
 *  - `InterruptionFrame` (Frame field 5): the server's output transport sends it, in order
 *    with the audio, the moment it drops the bot's speech. The SDK cannot decode it (it logs
 *    "Unknown frame kind"); here it calls `onInterruption`, so the player is flushed before
 *    any later audio arrives.
 *  - the audio frame's `sample_rate`: passed to `onAudioRate`, so playback does not have to
 *    assume the server's output rate. Audio is decoded here without the SDK's per-byte copy.
 *
 *   message Frame { oneof frame { TextFrame text = 1; AudioRawFrame audio = 2;
 *     TranscriptionFrame transcription = 3; MessageFrame message = 4;
 *     InterruptionFrame interruption = 5; } }
 *   message AudioRawFrame { uint64 id = 1; string name = 2; bytes audio = 3;
 *     uint32 sample_rate = 4; uint32 num_channels = 5; optional uint64 pts = 6; }
 */

import { ProtobufFrameSerializer } from "@pipecat-ai/websocket-transport";

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH = 2;
const WIRE_FIXED32 = 5;
const FRAME_AUDIO = 2;
const FRAME_INTERRUPTION = 5;

export interface SerializerHooks {
  onInterruption: () => void;
  onAudioRate: (sampleRate: number) => void;
}

class Reader {
  pos = 0;
  constructor(
    readonly bytes: Uint8Array,
    readonly end = bytes.length,
  ) {}

  varint(): number {
    let result = 0;
    let shift = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new RangeError("truncated varint");
      const byte = this.bytes[this.pos++];
      result += (byte & 0x7f) * shift;
      if ((byte & 0x80) === 0) return result;
      shift *= 128;
    }
    throw new RangeError("varint too long");
  }

  varintAt(pos: number): number {
    this.pos = pos;
    return this.varint();
  }

  /** Returns [field, wire type, start, end] of the next field and moves past it. */
  field(): [number, number, number, number] {
    const tag = this.varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    let start = this.pos;
    switch (wire) {
      case WIRE_VARINT:
        this.varint();
        break;
      case WIRE_FIXED64:
        this.pos += 8;
        break;
      case WIRE_FIXED32:
        this.pos += 4;
        break;
      case WIRE_LENGTH: {
        const length = this.varint();
        start = this.pos;
        this.pos += length;
        break;
      }
      default:
        throw new RangeError(`unsupported wire type ${wire}`);
    }
    if (this.pos > this.end) throw new RangeError("truncated field");
    return [field, wire, start, this.pos];
  }
}

export interface DecodedAudio {
  samples: Int16Array;
  sampleRate: number;
  numChannels: number;
}

/** The audio of an AudioRawFrame message occupying bytes[start, end). */
export function decodeAudioFrame(bytes: Uint8Array, start: number, end: number): DecodedAudio {
  const reader = new Reader(bytes, end);
  reader.pos = start;
  let audio: Uint8Array = new Uint8Array(0);
  let sampleRate = 0;
  let numChannels = 1;
  while (reader.pos < end) {
    const [field, wire, from, to] = reader.field();
    if (field === 3 && wire === WIRE_LENGTH) audio = bytes.slice(from, to - ((to - from) % 2));
    else if (field === 4 && wire === WIRE_VARINT) sampleRate = new Reader(bytes, to).varintAt(from);
    else if (field === 5 && wire === WIRE_VARINT) numChannels = new Reader(bytes, to).varintAt(from) || 1;
  }
  let samples = new Int16Array(audio.buffer, audio.byteOffset, audio.byteLength / 2);
  if (numChannels > 1) {
    const mono = new Int16Array(Math.floor(samples.length / numChannels));
    for (let i = 0; i < mono.length; i++) {
      let sum = 0;
      for (let c = 0; c < numChannels; c++) sum += samples[i * numChannels + c];
      mono[i] = sum / numChannels;
    }
    samples = mono;
  }
  return { samples, sampleRate, numChannels };
}

export class PipecatFrameSerializer extends ProtobufFrameSerializer {
  constructor(private readonly hooks: SerializerHooks) {
    super();
  }

  // The transport plays what comes back as {type: "audio"}, hands {type: "message"} to the
  // client and ignores other types.
  async deserialize(data: unknown): ReturnType<ProtobufFrameSerializer["deserialize"]> {
    if (data instanceof Blob) {
      const bytes = new Uint8Array(await data.arrayBuffer());
      const top = new Reader(bytes);
      try {
        const [field, wire, start, end] = top.field();
        if (field === FRAME_INTERRUPTION) {
          this.hooks.onInterruption();
          return { type: "interruption" } as unknown as Awaited<
            ReturnType<ProtobufFrameSerializer["deserialize"]>
          >;
        }
        if (field === FRAME_AUDIO && wire === WIRE_LENGTH) {
          const audio = decodeAudioFrame(bytes, start, end);
          if (audio.sampleRate) this.hooks.onAudioRate(audio.sampleRate);
          return { type: "audio", audio: audio.samples };
        }
      } catch {
        // Not ours to judge: let the SDK's decoder try (and report) it.
      }
    }
    return super.deserialize(data);
  }
}
