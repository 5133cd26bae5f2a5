// tinyforge capture firmware: streams one of the board's sensors to the host,
// as `tinyforge capture` records it (docs/protocol.md, "Capture firmware").
// No TFLM: the board's sensor sources (board_sensors.h), the pipeline's ring
// buffer and axis map, and protocol v1.
//
// It answers
//   HELLO    with BOOT (model= the SHA-256 of the string "capture", no tensors);
//   CAPTURE  with STREAM (which part, its rate), then CAP lines of samples until
//   STOP     which ends the stream with STOPPED (lines, values, lost values);
//   other types with ERR UNKNOWN_TYPE, and bad lines with ERR (BAD_CRC, ...).
// IMU readings are sent in tinyforge's axes (the part's axis map applied), as
// counts; audio as the microphone's int16 samples after its settling time.
#include <stddef.h>
#include <stdint.h>

#include "board_runtime.h"
#include "board_sensors.h"
#include "capture_config.h"
#include "pipeline_math.h"
#include "pipeline_ring.h"
#include "pipeline_settings.h"
#include "tf_protocol.h"

namespace {

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU
constexpr char kInput[] = "imu";
constexpr uint32_t kValuesPerSample = tfpipe::kImuAxes;
// 128 readings: about a second of the IMU, so a slow USB host loses nothing.
constexpr uint32_t kRingValues = 1024;
#else
constexpr char kInput[] = "microphone";
constexpr uint32_t kValuesPerSample = 1;
// 8,192 samples: 512 ms of audio between two visits of the loop.
constexpr uint32_t kRingValues = 8192;
#endif

int16_t g_ring_storage[kRingValues];
tfpipe::RingBuffer<int16_t> g_ring(g_ring_storage, kRingValues);

char g_line[kMaxLineLength + 1];
tfproto::LineParser g_parser(g_line, sizeof(g_line));

bool g_started = false;     // the sensor answered and runs
bool g_streaming = false;   // between CAPTURE and STOP
const char* g_part = "none";
uint32_t g_rate_mhz = 0;
uint32_t g_seq = 0;         // CAP lines of this capture
uint32_t g_values = 0;      // values sent in this capture
uint32_t g_lost = 0;        // values lost in this capture
uint32_t g_dropped_base = 0;

void SendBoot() {
  tfproto::BootInfo info = {};
  info.firmware = kFirmwareVersion;
  info.board = kBoardId;
  info.model_sha256 = kModelSha256;
  info.ok = true;
  info.max_line = static_cast<uint32_t>(g_parser.max_message());
  tfproto::WriteBoot(BoardSerialWrite, info);
}

#if TINYFORGE_PIPELINE_INPUT == TINYFORGE_PIPELINE_IMU

tfsensors::ImuKind g_kind = tfsensors::kImuNone;
uint32_t g_period_us = 0;
uint32_t g_last_reading_us = 0;

bool StartSensor() {
  g_kind = tfsensors::StartImu();
  if (g_kind == tfsensors::kImuNone) return false;
  g_part = g_kind == tfsensors::kImuLsm9ds1 ? "lsm9ds1" : "bmi270";
  g_rate_mhz = tfsensors::ImuRateMilliHz();
  g_period_us = static_cast<uint32_t>(1000000000ull / g_rate_mhz);
  return true;
}

void BeginStream() {
  int16_t discard[tfpipe::kImuAxes];
  while (tfsensors::ReadImu(discard)) {
  }
  g_last_reading_us = BoardMicros();
}

// The parts are polled (board_sensors_arduino.cpp): a reading the loop comes
// too late for is overwritten by the next one. The clock says how many were.
void CountMissedReadings(uint32_t now_us) {
  const uint32_t elapsed = now_us - g_last_reading_us;
  if (elapsed > g_period_us + g_period_us / 2) {
    g_lost += ((elapsed + g_period_us / 2) / g_period_us - 1) * kValuesPerSample;
  }
  g_last_reading_us = now_us;
}

void Acquire() {
  int16_t library[tfpipe::kImuAxes];
  while (tfsensors::ReadImu(library)) {
    CountMissedReadings(BoardMicros());
    int16_t counts[tfpipe::kImuAxes];
    tfpipe::MapAxes(library,
                    g_kind == tfsensors::kImuLsm9ds1 ? kLsm9ds1AxisMap : kBmi270AxisMap,
                    counts);
    if (g_streaming) g_ring.Write(counts, tfpipe::kImuAxes);
  }
}

#else  // microphone

uint32_t g_settling = 0;  // samples still to drop after the start

bool StartSensor() {
  if (!tfsensors::StartMicrophone(kAudioSampleRate, &g_ring)) return false;
  g_part = "pdm";
  g_rate_mhz = kAudioSampleRate * 1000u;
  g_settling = kAudioDiscardSamples;
  return true;
}

void BeginStream() {}

// The interrupt fills the ring; outside a capture, and while the microphone
// settles, its samples are dropped here.
void Acquire() {
  int16_t chunk[256];
  while (!g_streaming || g_settling > 0) {
    const uint32_t want = g_streaming && g_settling < 256 ? g_settling : 256;
    const uint32_t n = g_ring.Read(chunk, want);
    if (n == 0) break;
    g_settling = g_settling > n ? g_settling - n : 0;
  }
}

#endif

void SendStream(bool ok) {
  tfproto::MessageWriter writer(BoardSerialWrite);
  writer.Begin("STREAM");
  writer.Text("input", kInput);
  writer.Text("part", g_part);
  writer.UInt("rate_mhz", g_rate_mhz);
  writer.UInt("values", kValuesPerSample);
  writer.Text("status", ok ? "ok" : "error");
  if (!ok) {
    writer.Text("msg", kValuesPerSample == 1 ? "the microphone did not start"
                                             : "no IMU answered (LSM9DS1, BMI270)");
  }
  writer.End();
}

void StartCapture() {
  if (!g_started) g_started = StartSensor();
  SendStream(g_started);
  if (!g_started) return;
  g_seq = 0;
  g_values = 0;
  g_lost = 0;
  g_dropped_base = g_ring.Dropped();
  int16_t stale[64];
  while (g_ring.Read(stale, 64) > 0) {
  }
  BeginStream();
  g_streaming = true;
}

void StopCapture() {
  g_streaming = false;
  tfproto::MessageWriter writer(BoardSerialWrite);
  writer.Begin("STOPPED");
  writer.UInt("lines", g_seq);
  writer.UInt("values", g_values);
  writer.UInt("lost", g_lost + (g_ring.Dropped() - g_dropped_base));
  writer.End();
}

// One CAP line when a whole line of values is waiting.
void SendSamples() {
  if (!g_streaming || g_ring.Available() < kValuesPerLine) return;
  int16_t values[kValuesPerLine];
  g_ring.Read(values, kValuesPerLine);
  uint8_t bytes[kValuesPerLine * 2];
  for (uint32_t i = 0; i < kValuesPerLine; ++i) {  // little-endian on every board
    bytes[2 * i] = static_cast<uint8_t>(static_cast<uint16_t>(values[i]) & 0xff);
    bytes[2 * i + 1] = static_cast<uint8_t>(static_cast<uint16_t>(values[i]) >> 8);
  }
  tfproto::MessageWriter writer(BoardSerialWrite);
  writer.Begin("CAP");
  writer.UInt("seq", g_seq++);
  writer.UInt("lost", g_lost + (g_ring.Dropped() - g_dropped_base));
  writer.Hex("data", bytes, sizeof(bytes));
  writer.End();
  g_values += kValuesPerLine;
}

bool Is(const char* type, const char* expected) {
  while (*type != '\0' && *type == *expected) {
    ++type;
    ++expected;
  }
  return *type == *expected;
}

void Dispatch() {
  const char* type = g_parser.type();
  if (Is(type, "HELLO")) {
    SendBoot();
  } else if (Is(type, "CAPTURE")) {
    StartCapture();
  } else if (Is(type, "STOP")) {
    StopCapture();
  } else {
    tfproto::WriteError(BoardSerialWrite, tfproto::kNoSeq, tfproto::kErrUnknownType, 0, type);
  }
}

}  // namespace

void setup() {
  BoardSerialBegin(kBaud);
  SendBoot();
}

void loop() {
  for (int c = BoardSerialRead(); c >= 0; c = BoardSerialRead()) {
    switch (g_parser.Feed(static_cast<char>(c))) {
      case tfproto::LineParser::kMessage:
        Dispatch();
        break;
      case tfproto::LineParser::kError:
        tfproto::WriteError(BoardSerialWrite, tfproto::kNoSeq, g_parser.error_code(), 0,
                            g_parser.error_text());
        break;
      case tfproto::LineParser::kNone:
        break;
    }
  }
  if (g_started) Acquire();
  SendSamples();
}
