// tinyforge self-test firmware: exercises a board's runtime layer and serial link with
// protocol v1 (docs/protocol.md, "Self-test firmware") and no TFLM. `tinyforge selftest`
// builds it, runs it and checks every answer.
//
// It answers
//   HELLO      with BOOT (model= the SHA-256 of the string "selftest", arena 0, no ops);
//   ECHO       with ECHO, the same seq and data;
//   TIME       with TIME us=<BoardMicros()>, so the host can check the clock's rate;
//   IN         whole or in chunks, with RES computed by the "model" below, or ERR
//              (BAD_LENGTH, BAD_OFFSET, INPUT_INCOMPLETE, ...);
//   other types with ERR UNKNOWN_TYPE, and bad lines with ERR (BAD_CRC, LINE_TOO_LONG, ...).
// Like a model firmware with a demo input, it also sends a RES (src=demo) for a built-in
// input every 3 s until the host sends anything but HELLO, so a monitor has results to show.
#include <stddef.h>
#include <stdint.h>

#include "board_runtime.h"
#include "selftest_config.h"
#include "tf_protocol.h"

namespace {

// The stand-in model: int8[1,16] in, int8[1,4] out,
//   out[j] = clamp(sum of in[i] for every i with i % 4 == j, -128, 127).
constexpr int kInputCount = 16;
constexpr int kOutputCount = 4;
const int kInputDims[] = {1, kInputCount};
const int kOutputDims[] = {1, kOutputCount};

int8_t g_input[kInputCount];
int8_t g_output[kOutputCount];

// The demo input and its schedule: the first one 3 s after boot, long after a host that
// talks to the firmware (tinyforge selftest, validate) has sent its first request.
constexpr uint32_t kDemoIntervalUs = 3000000;
const int8_t kDemoInput[kInputCount] = {10, -20, 30, -40, 50, -60, 70, -80,
                                        5, 15, -25, 35, -45, 55, -65, 75};
bool g_host_active = false;
uint32_t g_demo_seq = 0;
uint32_t g_last_demo_us = 0;

char g_line[kMaxLineLength + 1];
tfproto::LineParser g_parser(g_line, sizeof(g_line));
const tfproto::InputBuffer kInputBuffers[] = {{g_input, sizeof(g_input)}};
tfproto::InputAssembler g_assembler(kInputBuffers, 1);

tfproto::TensorView InputView() {
  return {tfproto::kInt8, kInputDims, 2, g_input, kInputCount, kInputScale, kInputZeroPoint};
}

tfproto::TensorView OutputView() {
  return {tfproto::kInt8, kOutputDims, 2, g_output, kOutputCount, kOutputScale,
          kOutputZeroPoint};
}

void SendBoot() {
  const tfproto::TensorView inputs[] = {InputView()};
  const tfproto::TensorView outputs[] = {OutputView()};
  tfproto::BootInfo info = {};
  info.firmware = kFirmwareVersion;
  info.board = kBoardId;
  info.model_sha256 = kModelSha256;
  info.arena_bytes = 0;
  info.arena_used_bytes = 0;
  info.ops = 0;
  info.inputs = inputs;
  info.num_inputs = 1;
  info.outputs = outputs;
  info.num_outputs = 1;
  info.ok = true;
  info.max_line = static_cast<uint32_t>(g_parser.max_message());
  tfproto::WriteBoot(BoardSerialWrite, info);
}

void RunModel() {
  for (int j = 0; j < kOutputCount; ++j) {
    int32_t sum = 0;
    for (int i = j; i < kInputCount; i += kOutputCount) sum += g_input[i];
    g_output[j] = static_cast<int8_t>(sum < -128 ? -128 : sum > 127 ? 127 : sum);
  }
}

void RunDemo() {
  for (int i = 0; i < kInputCount; ++i) g_input[i] = kDemoInput[i];
  const uint32_t start = BoardMicros();
  RunModel();
  const uint32_t micros = BoardMicros() - start;
  const tfproto::TensorView outputs[] = {OutputView()};
  tfproto::WriteResult(BoardSerialWrite, g_demo_seq++, "demo", micros, outputs, 1);
  g_last_demo_us = BoardMicros();
}

void AnswerInput() {
  uint32_t seq;
  if (!g_assembler.Receive(BoardSerialWrite, g_parser, &seq)) return;
  const uint32_t start = BoardMicros();
  RunModel();
  const uint32_t micros = BoardMicros() - start;
  const tfproto::TensorView outputs[] = {OutputView()};
  tfproto::WriteResult(BoardSerialWrite, seq, "host", micros, outputs, 1);
}

void AnswerTime() {
  tfproto::MessageWriter writer(BoardSerialWrite);
  writer.Begin("TIME");
  writer.UInt("us", BoardMicros());
  writer.End();
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
  if (!Is(type, "HELLO")) g_host_active = true;
  if (Is(type, "HELLO")) {
    SendBoot();
  } else if (Is(type, "ECHO")) {
    tfproto::AnswerEcho(BoardSerialWrite, g_parser);
  } else if (Is(type, "TIME")) {
    AnswerTime();
  } else if (Is(type, "IN")) {
    AnswerInput();
  } else {
    tfproto::WriteError(BoardSerialWrite, tfproto::kNoSeq, tfproto::kErrUnknownType, 0, type);
  }
}

}  // namespace

void setup() {
  BoardSerialBegin(kBaud);
  SendBoot();
  g_last_demo_us = BoardMicros();
}

void loop() {
  // Everything waiting, then back to loop(): the Arduino core services USB between calls.
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
  if (!g_host_active && BoardMicros() - g_last_demo_us >= kDemoIntervalUs) RunDemo();
}
