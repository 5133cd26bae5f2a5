// Test harness for firmware_templates/common/tf_protocol.cpp (driven by tests/test_protocol.py).
//
//   protocol_harness emit COMMANDS OUT     runs one command per line of COMMANDS, writing
//                                          what the encoder produces to OUT
//   protocol_harness device INPUT OUT SIZES
//                                          feeds INPUT byte by byte to a LineParser and answers
//                                          like a device whose input tensors have SIZES bytes
//                                          (comma-separated), writing its replies to OUT. It
//                                          handles HELLO, IN (whole or in chunks, through an
//                                          InputAssembler), ECHO, RUN (a RES of the current
//                                          inputs, src=demo, seq=0) and DROP (abandons the
//                                          input being assembled, as a PROBE does).
//
// Commands (fields separated by one space; floats are given as their 8 hex digit IEEE bits
// so the test knows exactly which float the encoder saw; "-" is an empty list):
//   fmt BITS...                      FormatFloat of each, space-separated, on one line
//   crc HEX                          Crc32 of the bytes, 8 hex digits
//   text TYPE KEY HEX                a message with one Text field holding the bytes
//   int TYPE KEY N / uint TYPE KEY N / hex TYPE KEY HEX
//   values TYPE KEY DTYPE LIST       LIST: decimal ints, or float bits for float32
//   deq TYPE KEY DTYPE SCALEBITS ZP LIST
//   res SEQ SRC US TENSOR...         TENSOR: DTYPE:SCALEBITS:ZP:LIST
//   boot FW BOARD SHA ARENA USED OPS ok|error INS OUTS [MAXLINE]
//                                    INS/OUTS: "-" or DTYPE:SCALEBITS:ZP:DIMS,... (DIMS 1x32x3)
//   err SEQ|- CODE STATUS HEX        ERR whose msg is the bytes of HEX
//   echo SEQ HEX
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include "tf_protocol.h"

#ifndef HARNESS_LINE_CAPACITY
#define HARNESS_LINE_CAPACITY 128
#endif

namespace {

FILE* g_out = nullptr;

void WriteOut(const char* data, size_t length) { fwrite(data, 1, length, g_out); }

std::vector<std::string> Split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    const size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

std::vector<uint8_t> Bytes(const std::string& hex) {
  std::vector<uint8_t> bytes(hex.size() / 2);
  if (tfproto::DecodeHex(hex.data(), hex.size(), bytes.data(), bytes.size()) == tfproto::kBadHex) {
    fprintf(stderr, "bad hex: %s\n", hex.c_str());
    exit(2);
  }
  return bytes;
}

float FloatFromBits(const std::string& hex) {
  const uint32_t bits = static_cast<uint32_t>(strtoul(hex.c_str(), nullptr, 16));
  float value;
  memcpy(&value, &bits, sizeof(value));
  return value;
}

tfproto::ValueType TypeFromName(const std::string& name) {
  static const tfproto::ValueType kTypes[] = {tfproto::kInt8, tfproto::kUInt8, tfproto::kInt16,
                                              tfproto::kInt32, tfproto::kFloat32};
  for (tfproto::ValueType type : kTypes) {
    if (name == tfproto::ValueTypeName(type)) return type;
  }
  fprintf(stderr, "unknown dtype: %s\n", name.c_str());
  exit(2);
}

// The raw bytes of a list of values of `type`, as a tensor would hold them.
std::vector<uint8_t> Elements(tfproto::ValueType type, const std::string& list, size_t* count) {
  std::vector<uint8_t> bytes;
  *count = 0;
  if (list == "-") return bytes;
  for (const std::string& item : Split(list, ',')) {
    uint8_t element[4];
    if (type == tfproto::kFloat32) {
      const float value = FloatFromBits(item);
      memcpy(element, &value, 4);
    } else {
      const long value = strtol(item.c_str(), nullptr, 10);
      const int8_t i8 = static_cast<int8_t>(value);
      const uint8_t u8 = static_cast<uint8_t>(value);
      const int16_t i16 = static_cast<int16_t>(value);
      const int32_t i32 = static_cast<int32_t>(value);
      if (type == tfproto::kInt8) memcpy(element, &i8, 1);
      if (type == tfproto::kUInt8) memcpy(element, &u8, 1);
      if (type == tfproto::kInt16) memcpy(element, &i16, 2);
      if (type == tfproto::kInt32) memcpy(element, &i32, 4);
    }
    bytes.insert(bytes.end(), element, element + tfproto::ValueTypeSize(type));
    ++*count;
  }
  return bytes;
}

// Keeps what TensorViews point to alive for one command.
struct TensorStore {
  std::vector<std::vector<uint8_t>> data;
  std::vector<std::vector<int>> dims;
  std::vector<tfproto::TensorView> views;
};

// "DTYPE:SCALEBITS:ZP:LIST" tensors (values) or "DTYPE:SCALEBITS:ZP:DIMS" specs (shapes).
void AddTensor(const std::string& spec, bool with_values, TensorStore* store) {
  const std::vector<std::string> parts = Split(spec, ':');
  if (parts.size() != 4) {
    fprintf(stderr, "bad tensor: %s\n", spec.c_str());
    exit(2);
  }
  tfproto::TensorView view = {};
  view.type = TypeFromName(parts[0]);
  view.scale = FloatFromBits(parts[1]);
  view.zero_point = static_cast<int32_t>(strtol(parts[2].c_str(), nullptr, 10));
  if (with_values) {
    store->data.push_back(Elements(view.type, parts[3], &view.count));
  } else {
    std::vector<int> dims;
    if (!parts[3].empty()) {
      for (const std::string& d : Split(parts[3], 'x')) dims.push_back(atoi(d.c_str()));
    }
    store->dims.push_back(dims);
  }
  store->views.push_back(view);
}

// Points the views at their storage once no vector will reallocate any more.
void Bind(TensorStore* store, bool with_values) {
  for (size_t i = 0; i < store->views.size(); ++i) {
    if (with_values) {
      store->views[i].data = store->data[i].data();
    } else {
      store->views[i].dims = store->dims[i].data();
      store->views[i].num_dims = static_cast<int>(store->dims[i].size());
    }
  }
}

void Specs(const std::string& list, TensorStore* store) {
  if (list != "-") {
    for (const std::string& spec : Split(list, ',')) AddTensor(spec, false, store);
  }
  Bind(store, false);
}

void RunCommand(const std::vector<std::string>& a) {
  const std::string& name = a[0];
  tfproto::MessageWriter w(WriteOut);
  if (name == "fmt") {
    for (size_t i = 1; i < a.size(); ++i) {
      char text[tfproto::kMaxFloatChars];
      const size_t n = tfproto::FormatFloat(FloatFromBits(a[i]), text);
      if (i > 1) WriteOut(" ", 1);
      WriteOut(text, n);
    }
    WriteOut("\n", 1);
  } else if (name == "crc") {
    const std::vector<uint8_t> bytes = Bytes(a[1]);
    fprintf(g_out, "%08lx\n",
            static_cast<unsigned long>(tfproto::Crc32(reinterpret_cast<const char*>(bytes.data()),
                                                      bytes.size())));
  } else if (name == "text") {
    const std::vector<uint8_t> bytes = Bytes(a[3]);
    w.Begin(a[1].c_str());
    w.Text(a[2].c_str(), reinterpret_cast<const char*>(bytes.data()), bytes.size());
    w.End();
  } else if (name == "int" || name == "uint") {
    w.Begin(a[1].c_str());
    if (name == "int") {
      w.Int(a[2].c_str(), static_cast<int32_t>(strtol(a[3].c_str(), nullptr, 10)));
    } else {
      w.UInt(a[2].c_str(), static_cast<uint32_t>(strtoul(a[3].c_str(), nullptr, 10)));
    }
    w.End();
  } else if (name == "hex") {
    const std::vector<uint8_t> bytes = Bytes(a[3]);
    w.Begin(a[1].c_str());
    w.Hex(a[2].c_str(), bytes.data(), bytes.size());
    w.End();
  } else if (name == "values" || name == "deq") {
    const tfproto::ValueType type = TypeFromName(a[3]);
    size_t count;
    const std::vector<uint8_t> bytes = Elements(type, a.back(), &count);
    w.Begin(a[1].c_str());
    if (name == "values") {
      w.Values(a[2].c_str(), type, bytes.data(), count);
    } else {
      w.Dequantized(a[2].c_str(), type, bytes.data(), count, FloatFromBits(a[4]),
                    static_cast<int32_t>(strtol(a[5].c_str(), nullptr, 10)));
    }
    w.End();
  } else if (name == "res") {
    TensorStore store;
    for (size_t i = 4; i < a.size(); ++i) AddTensor(a[i], true, &store);
    Bind(&store, true);
    tfproto::WriteResult(WriteOut, static_cast<uint32_t>(strtoul(a[1].c_str(), nullptr, 10)),
                         a[2].c_str(), static_cast<uint32_t>(strtoul(a[3].c_str(), nullptr, 10)),
                         store.views.data(), store.views.size());
  } else if (name == "boot") {
    TensorStore ins, outs;
    Specs(a[8], &ins);
    Specs(a[9], &outs);
    tfproto::BootInfo info = {};
    info.firmware = a[1].c_str();
    info.board = a[2].c_str();
    info.model_sha256 = a[3].c_str();
    info.arena_bytes = static_cast<uint32_t>(strtoul(a[4].c_str(), nullptr, 10));
    info.arena_used_bytes = static_cast<uint32_t>(strtoul(a[5].c_str(), nullptr, 10));
    info.ops = static_cast<uint32_t>(strtoul(a[6].c_str(), nullptr, 10));
    info.ok = a[7] == "ok";
    info.inputs = ins.views.data();
    info.num_inputs = ins.views.size();
    info.outputs = outs.views.data();
    info.num_outputs = outs.views.size();
    if (a.size() > 10) info.max_line = static_cast<uint32_t>(strtoul(a[10].c_str(), nullptr, 10));
    // The memory plan after max_line (docs/protocol.md 5): "boot ... 512 offline".
    if (a.size() > 11) info.memory_plan = a[11].c_str();
    tfproto::WriteBoot(WriteOut, info);
  } else if (name == "err") {
    const std::vector<uint8_t> bytes = Bytes(a[4]);
    const std::string text(bytes.begin(), bytes.end());
    const int64_t seq = a[1] == "-" ? tfproto::kNoSeq : strtoll(a[1].c_str(), nullptr, 10);
    tfproto::WriteError(WriteOut, seq, a[2].c_str(),
                        static_cast<int32_t>(strtol(a[3].c_str(), nullptr, 10)), text.c_str());
  } else if (name == "echo") {
    const std::vector<uint8_t> bytes = Bytes(a[2]);
    w.Begin("ECHO");
    w.UInt("seq", static_cast<uint32_t>(strtoul(a[1].c_str(), nullptr, 10)));
    w.Hex("data", bytes.data(), bytes.size());
    w.End();
  } else {
    fprintf(stderr, "unknown command: %s\n", name.c_str());
    exit(2);
  }
}

int Emit(FILE* in) {
  char line[1 << 16];
  while (fgets(line, sizeof(line), in) != nullptr) {
    std::string text(line);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    if (!text.empty()) RunCommand(Split(text, ' '));
  }
  return 0;
}

// A device with int8 input tensors of the given sizes. IN is answered with a RES whose
// outputs are the inputs as int8 with scale 0.5 and zero point -3, so the test sees exactly
// which bytes the parser decoded.
int Device(FILE* in, const std::string& sizes_text) {
  std::vector<std::vector<int8_t>> tensors;
  std::vector<std::vector<int>> dims;
  for (const std::string& size : Split(sizes_text, ',')) {
    const size_t n = strtoul(size.c_str(), nullptr, 10);
    tensors.push_back(std::vector<int8_t>(n, 0));
    dims.push_back(std::vector<int>{1, static_cast<int>(n)});
  }
  // Like the sketch: the assembler exists before the buffers point at the tensors (the
  // interpreter allocates them in setup()), so it must read them when a request comes.
  std::vector<tfproto::InputBuffer> buffers(tensors.size(), tfproto::InputBuffer{nullptr, 0});
  tfproto::InputAssembler assembler(buffers.data(), buffers.size());
  std::vector<tfproto::TensorView> views;
  for (size_t i = 0; i < tensors.size(); ++i) {
    buffers[i] = {tensors[i].data(), tensors[i].size()};
    views.push_back({tfproto::kInt8, dims[i].data(), 2, tensors[i].data(), tensors[i].size(),
                     0.5f, -3});
  }
  char buffer[HARNESS_LINE_CAPACITY];
  tfproto::LineParser parser(buffer, sizeof(buffer));
  static const char kSha[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  tfproto::BootInfo boot = {"0.1.0", "harness", kSha, 4096, 1000, 3,
                            views.data(), views.size(), views.data(), views.size(), true,
                            static_cast<uint32_t>(parser.max_message()), nullptr};

  int c;
  while ((c = fgetc(in)) != EOF) {
    switch (parser.Feed(static_cast<char>(c))) {
      case tfproto::LineParser::kNone:
        break;
      case tfproto::LineParser::kError:
        tfproto::WriteError(WriteOut, tfproto::kNoSeq, parser.error_code(), 0,
                            parser.error_text());
        break;
      case tfproto::LineParser::kMessage: {
        const std::string type = parser.type();
        uint32_t seq;
        if (type == "HELLO") {
          tfproto::WriteBoot(WriteOut, boot);
        } else if (type == "IN") {
          if (assembler.Receive(WriteOut, parser, &seq)) {
            tfproto::WriteResult(WriteOut, seq, "host", 0, views.data(), views.size());
          }
        } else if (type == "ECHO") {
          tfproto::AnswerEcho(WriteOut, parser);
        } else if (type == "RUN") {
          // Shows the inputs as they are now, like a demo inference would use them.
          tfproto::WriteResult(WriteOut, 0, "demo", 0, views.data(), views.size());
        } else if (type == "DROP") {
          assembler.Abandon(WriteOut, "dropped");
        } else {
          tfproto::WriteError(WriteOut, tfproto::kNoSeq, tfproto::kErrUnknownType, 0,
                              parser.type());
        }
        break;
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool emit = argc == 4 && strcmp(argv[1], "emit") == 0;
  const bool device = argc == 5 && strcmp(argv[1], "device") == 0;
  if (!emit && !device) {
    fprintf(stderr, "usage: %s emit COMMANDS OUT | device INPUT OUT SIZES\n", argv[0]);
    return 2;
  }
  FILE* in = fopen(argv[2], "rb");
  g_out = fopen(argv[3], "wb");
  if (in == nullptr || g_out == nullptr) {
    perror("open");
    return 2;
  }
  const int status = emit ? Emit(in) : Device(in, argv[4]);
  fclose(in);
  fclose(g_out);
  return status;
}
