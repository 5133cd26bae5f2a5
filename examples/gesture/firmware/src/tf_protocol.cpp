// tinyforge serial protocol v1: see tf_protocol.h and docs/protocol.md.
#include "tf_protocol.h"

#include <string.h>

namespace tfproto {
namespace {

static_assert(kVersion == 1, "the line prefix below spells the version");
const char kLinePrefix[] = "!tf1 ";
const char kLowerHex[] = "0123456789abcdef";
const char kUpperHex[] = "0123456789ABCDEF";

// CRC-32 (IEEE, reflected, polynomial 0xEDB88320) four bits at a time: a
// 64-byte table instead of 1 KB of flash, still fast enough for serial rates.
const uint32_t kCrcNibbles[16] = {
    0x00000000, 0x1DB71064, 0x3B6E20C8, 0x26D930AC, 0x76DC4190, 0x6B6B51F4,
    0x4DB26158, 0x5005713C, 0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C,
    0x9B64C2B0, 0x86D3D2D4, 0xA00AE278, 0xBDBDF21C};

// The powers of ten a double holds exactly.
const double kPow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                           1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                           1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsKeyChar(char c) { return IsLower(c) || IsDigit(c) || c == '_'; }
bool IsValueChar(char c) { return c >= 0x21 && c <= 0x7e; }

int LowerHexValue(char c) {
  if (IsDigit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool IsUpperHexDigit(char c) { return IsDigit(c) || (c >= 'A' && c <= 'F'); }

bool IsLowerHex(const char* text, size_t length) {
  for (size_t i = 0; i < length; ++i) {
    if (LowerHexValue(text[i]) < 0) return false;
  }
  return true;
}

bool IsKey(const char* key) {
  if (key == nullptr || !IsLower(key[0])) return false;
  for (const char* p = key + 1; *p != '\0'; ++p) {
    if (!IsKeyChar(*p)) return false;
  }
  return true;
}

bool IsType(const char* type) {
  if (type == nullptr || *type == '\0') return false;
  for (const char* p = type; *p != '\0'; ++p) {
    if (!IsUpper(*p)) return false;
  }
  return true;
}

double Pow10(int n) {
  double result = 1.0;
  for (; n > 22; n -= 22) result *= kPow10[22];
  return result * kPow10[n];
}

double ScaleByPow10(double value, int n) {
  return n >= 0 ? value * Pow10(n) : value / Pow10(-n);
}

// For a finite value > 0: the 7 significant decimal digits (1000000..9999999)
// and the decimal exponent e with value ~= digits * 10^(e - 6). Rounds to
// nearest, ties to even, like Python's format(x, ".7g"). Scaling in double
// keeps the error far below the last digit, so only the integer digits are
// produced here and no float printf is needed.
uint32_t SevenDigits(float value, int* exponent) {
  const double v = value;
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  const int binary_exponent = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  // floor(binary_exponent * log10(2)) without libm: the decimal exponent or one below.
  int e = binary_exponent >= 0 ? (binary_exponent * 78913) >> 18
                               : -((-binary_exponent * 78913 + 262143) >> 18);
  double scaled = ScaleByPow10(v, 6 - e);
  if (scaled >= 1e7) {
    ++e;
    scaled = ScaleByPow10(v, 6 - e);
  } else if (scaled < 1e6) {
    --e;
    scaled = ScaleByPow10(v, 6 - e);
  }
  uint32_t digits = static_cast<uint32_t>(scaled);
  const double fraction = scaled - digits;
  if (fraction > 0.5 || (fraction == 0.5 && (digits & 1) != 0)) ++digits;
  if (digits >= 10000000) {
    digits /= 10;
    ++e;
  }
  *exponent = e;
  return digits;
}

size_t CopyText(const char* text, char* out) {
  size_t n = strlen(text);
  memcpy(out, text, n);
  return n;
}

int32_t IntAt(ValueType type, const void* data, size_t i) {
  const char* bytes = static_cast<const char*>(data) + i * ValueTypeSize(type);
  switch (type) {
    case kInt8: {
      int8_t v;
      memcpy(&v, bytes, sizeof(v));
      return v;
    }
    case kUInt8: {
      uint8_t v;
      memcpy(&v, bytes, sizeof(v));
      return v;
    }
    case kInt16: {
      int16_t v;
      memcpy(&v, bytes, sizeof(v));
      return v;
    }
    case kInt32:
    case kFloat32:
      break;
  }
  int32_t v;
  memcpy(&v, bytes, sizeof(v));
  return v;
}

float FloatAt(const void* data, size_t i) {
  float v;
  memcpy(&v, static_cast<const char*>(data) + i * sizeof(float), sizeof(v));
  return v;
}

// Builds "q3" or "f3" for output 3.
void OutputKey(char letter, size_t index, char* key) {
  key[0] = letter;
  key[1 + FormatUInt(static_cast<uint32_t>(index), key + 1)] = '\0';
}

// Appends "text" + number to a bounded C string (for ERR texts).
size_t AppendText(char* out, size_t at, size_t capacity, const char* text) {
  while (*text != '\0' && at + 1 < capacity) out[at++] = *text++;
  out[at] = '\0';
  return at;
}

size_t AppendUInt(char* out, size_t at, size_t capacity, uint32_t value) {
  char digits[11];
  digits[FormatUInt(value, digits)] = '\0';
  return AppendText(out, at, capacity, digits);
}

}  // namespace

const char* ValueTypeName(ValueType type) {
  switch (type) {
    case kInt8: return "int8";
    case kUInt8: return "uint8";
    case kInt16: return "int16";
    case kInt32: return "int32";
    case kFloat32: return "float32";
  }
  return "unknown";
}

size_t ValueTypeSize(ValueType type) {
  switch (type) {
    case kInt8:
    case kUInt8: return 1;
    case kInt16: return 2;
    case kInt32:
    case kFloat32: return 4;
  }
  return 1;
}

uint32_t Crc32(const char* data, size_t length, uint32_t crc) {
  crc = ~crc;
  for (size_t i = 0; i < length; ++i) {
    crc ^= static_cast<uint8_t>(data[i]);
    crc = (crc >> 4) ^ kCrcNibbles[crc & 0xf];
    crc = (crc >> 4) ^ kCrcNibbles[crc & 0xf];
  }
  return ~crc;
}

size_t FormatUInt(uint32_t value, char* out) {
  char reversed[10];
  size_t n = 0;
  do {
    reversed[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  for (size_t i = 0; i < n; ++i) out[i] = reversed[n - 1 - i];
  return n;
}

size_t FormatInt(int32_t value, char* out) {
  if (value >= 0) return FormatUInt(static_cast<uint32_t>(value), out);
  out[0] = '-';
  // Negate in unsigned arithmetic so INT32_MIN does not overflow.
  return 1 + FormatUInt(0u - static_cast<uint32_t>(value), out + 1);
}

size_t FormatFloat(float value, char* out) {
  if (value != value) return CopyText("nan", out);
  if (value == 0.0f) return CopyText("0", out);
  char* p = out;
  if (value < 0.0f) {
    *p++ = '-';
    value = -value;
  }
  if (value > 3.40282347e+38f) return static_cast<size_t>(p - out) + CopyText("inf", p);

  int e;
  uint32_t digits = SevenDigits(value, &e);
  char d[7];
  for (int i = 6; i >= 0; --i) {
    d[i] = static_cast<char>('0' + digits % 10);
    digits /= 10;
  }
  int n = 7;  // significant digits left after trimming trailing zeros
  while (n > 1 && d[n - 1] == '0') --n;

  if (e < -4 || e >= 7) {
    *p++ = d[0];
    if (n > 1) {
      *p++ = '.';
      for (int i = 1; i < n; ++i) *p++ = d[i];
    }
    *p++ = 'e';
    *p++ = e < 0 ? '-' : '+';
    const int magnitude = e < 0 ? -e : e;  // at most 45 for a float
    *p++ = static_cast<char>('0' + magnitude / 10);
    *p++ = static_cast<char>('0' + magnitude % 10);
  } else if (e >= 0) {
    for (int i = 0; i <= e; ++i) *p++ = d[i];
    if (n > e + 1) {
      *p++ = '.';
      for (int i = e + 1; i < n; ++i) *p++ = d[i];
    }
  } else {
    *p++ = '0';
    *p++ = '.';
    for (int i = e + 1; i < 0; ++i) *p++ = '0';
    for (int i = 0; i < n; ++i) *p++ = d[i];
  }
  return static_cast<size_t>(p - out);
}

// ---- MessageWriter ----

MessageWriter::MessageWriter(WriteFn write)
    : write_(write), crc_(0), active_(false), used_(0) {}

void MessageWriter::Begin(const char* type) {
  active_ = IsType(type);
  if (!active_) return;
  crc_ = 0;
  used_ = 0;
  Put(kLinePrefix, sizeof(kLinePrefix) - 1);
  Put(type, strlen(type));
}

void MessageWriter::Text(const char* key, const char* value) {
  Text(key, value, value == nullptr ? 0 : strlen(value));
}

void MessageWriter::Text(const char* key, const char* value, size_t length) {
  if (!StartField(key)) return;
  for (size_t i = 0; i < length; ++i) {
    const char c = value[i];
    // '!' is encoded too, so no value can contain the "!tf" that starts a message.
    if (IsValueChar(c) && c != '%' && c != '!') {
      Put(c);
    } else {
      const uint8_t byte = static_cast<uint8_t>(c);
      Put('%');
      Put(kUpperHex[byte >> 4]);
      Put(kUpperHex[byte & 0xf]);
    }
  }
}

void MessageWriter::Int(const char* key, int32_t value) {
  if (StartField(key)) PutInt(value);
}

void MessageWriter::UInt(const char* key, uint32_t value) {
  if (StartField(key)) PutUInt(value);
}

void MessageWriter::Values(const char* key, ValueType type, const void* data,
                           size_t count) {
  if (!StartField(key)) return;
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) Put(',');
    if (type == kFloat32) {
      PutFloat(FloatAt(data, i));
    } else {
      PutInt(IntAt(type, data, i));
    }
  }
}

void MessageWriter::Dequantized(const char* key, ValueType type, const void* data,
                                size_t count, float scale, int32_t zero_point) {
  if (type == kFloat32) {
    Values(key, type, data, count);
    return;
  }
  if (!StartField(key)) return;
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) Put(',');
    // In 64 bits: an int32 value minus an int32 zero point can overflow 32.
    const int64_t centered = static_cast<int64_t>(IntAt(type, data, i)) - zero_point;
    PutFloat(static_cast<float>(centered) * scale);
  }
}

void MessageWriter::Hex(const char* key, const uint8_t* data, size_t length) {
  if (!StartField(key)) return;
  for (size_t i = 0; i < length; ++i) {
    Put(kLowerHex[data[i] >> 4]);
    Put(kLowerHex[data[i] & 0xf]);
  }
}

void MessageWriter::TensorSpecs(const char* key, const TensorView* tensors,
                                size_t count) {
  if (!StartField(key)) return;
  for (size_t t = 0; t < count; ++t) {
    const TensorView& tensor = tensors[t];
    if (t > 0) Put(',');
    const char* name = ValueTypeName(tensor.type);
    Put(name, strlen(name));
    Put(':');
    for (int d = 0; d < tensor.num_dims; ++d) {
      if (d > 0) Put('x');
      PutInt(tensor.dims[d]);
    }
    Put(':');
    PutFloat(tensor.scale);
    Put(':');
    PutInt(tensor.zero_point);
  }
}

void MessageWriter::End() {
  if (!active_) return;
  Flush();  // the CRC covers everything up to here
  const uint32_t crc = crc_;
  char trailer[12] = {' ', '*'};
  for (int i = 0; i < 8; ++i) trailer[2 + i] = kLowerHex[(crc >> (28 - 4 * i)) & 0xf];
  trailer[10] = '\r';
  trailer[11] = '\n';
  write_(trailer, sizeof(trailer));
  active_ = false;
}

bool MessageWriter::StartField(const char* key) {
  if (!active_ || !IsKey(key)) return false;
  Put(' ');
  Put(key, strlen(key));
  Put('=');
  return true;
}

void MessageWriter::Put(char c) {
  if (used_ == sizeof(buffer_)) Flush();
  buffer_[used_++] = c;
}

void MessageWriter::Put(const char* text, size_t length) {
  for (size_t i = 0; i < length; ++i) Put(text[i]);
}

void MessageWriter::PutFloat(float value) {
  char text[kMaxFloatChars];
  Put(text, FormatFloat(value, text));
}

void MessageWriter::PutInt(int32_t value) {
  char text[11];
  Put(text, FormatInt(value, text));
}

void MessageWriter::PutUInt(uint32_t value) {
  char text[11];
  Put(text, FormatUInt(value, text));
}

void MessageWriter::Flush() {
  if (used_ == 0) return;
  crc_ = Crc32(buffer_, used_, crc_);
  write_(buffer_, used_);
  used_ = 0;
}

// ---- LineParser ----

LineParser::LineParser(char* buffer, size_t capacity)
    : buffer_(buffer),
      capacity_(capacity),
      length_(0),
      in_message_(false),
      overflow_(false),
      previous_{0, 0},
      type_(""),
      fields_(nullptr),
      fields_end_(nullptr),
      error_code_(""),
      error_text_("") {}

LineParser::Result LineParser::Feed(char c) {
  if (c == '\n' || c == '\r') return EndLine();
  const bool marker = previous_[0] == '!' && previous_[1] == 't' && c == 'f';
  previous_[0] = previous_[1];
  previous_[1] = c;
  if (marker) {
    // The last "!tf" on a line starts the message: drop whatever came before,
    // including the previous message, whose text this one overwrites.
    type_ = "";
    fields_ = fields_end_ = nullptr;
    in_message_ = true;
    overflow_ = capacity_ < 4;
    length_ = 0;
    if (!overflow_) {
      memcpy(buffer_, "!tf", 3);
      length_ = 3;
    }
    return kNone;
  }
  if (!in_message_) return kNone;
  if (length_ + 1 < capacity_) {
    buffer_[length_++] = c;
  } else {
    overflow_ = true;
  }
  return kNone;
}

LineParser::Result LineParser::EndLine() {
  previous_[0] = previous_[1] = 0;
  if (!in_message_) return kNone;  // an empty line, or one without "!tf"
  in_message_ = false;
  if (overflow_) {
    overflow_ = false;
    return Fail(kErrLineTooLong, "line longer than the device's buffer");
  }
  buffer_[length_] = '\0';
  return Parse();
}

LineParser::Result LineParser::Fail(const char* code, const char* text) {
  error_code_ = code;
  error_text_ = text;
  type_ = "";
  fields_ = fields_end_ = nullptr;
  return kError;
}

LineParser::Result LineParser::Parse() {
  char* const line = buffer_;
  const size_t n = length_;
  // "!tf" <version> " ": the version is checked first, since a later version
  // may change everything after it.
  size_t i = 3;
  while (i < n && IsDigit(line[i])) ++i;
  if (i == 3 || i > 3 + 9 || i >= n || line[i] != ' ' || line[3] == '0') {
    return Fail(kErrBadMessage, "no protocol version after !tf");
  }
  if (i != 4 || line[3] != '1') return Fail(kErrProtocolVersion, "this device speaks !tf1");

  // " *" and 8 lower-case hex digits end the line.
  if (n < i + 1 + 10 || line[n - 10] != ' ' || line[n - 9] != '*' ||
      !IsLowerHex(line + n - 8, 8)) {
    return Fail(kErrBadMessage, "no CRC at the end of the line");
  }
  uint32_t expected = 0;
  for (size_t k = n - 8; k < n; ++k) {
    expected = (expected << 4) | static_cast<uint32_t>(LowerHexValue(line[k]));
  }
  if (Crc32(line, n - 10, 0) != expected) return Fail(kErrBadCrc, "CRC mismatch");

  char* const end = line + n - 10;
  char* p = line + i + 1;
  char* const type = p;
  while (p < end && IsUpper(*p)) ++p;
  if (p == type || (p < end && *p != ' ')) return Fail(kErrBadMessage, "bad message type");
  if (!ParseFields(p, end)) return Fail(kErrBadMessage, "bad field");
  type_ = type;
  return kMessage;
}

// Checks " key=value" fields in [begin, end) and turns every separator into a
// NUL, so the type and each "key=value" become C strings.
bool LineParser::ParseFields(char* begin, char* end) {
  char* p = begin;
  char* const fields = begin + 1;
  while (p < end) {
    *p++ = '\0';  // was ' '
    char* const key = p;
    if (p >= end || !IsLower(*p)) return false;
    while (p < end && IsKeyChar(*p)) ++p;
    if (p >= end || *p != '=') return false;
    const size_t key_length = static_cast<size_t>(p - key) + 1;  // with '='
    for (const char* other = fields; other < key; other += strlen(other) + 1) {
      if (strncmp(other, key, key_length) == 0) return false;  // duplicate key
    }
    for (++p; p < end && *p != ' '; ++p) {
      if (!IsValueChar(*p)) return false;
      if (*p == '%' && (end - p < 3 || !IsUpperHexDigit(p[1]) || !IsUpperHexDigit(p[2]))) {
        return false;
      }
    }
  }
  *end = '\0';  // was the ' ' of " *"
  fields_ = fields;
  fields_end_ = end;
  return true;
}

bool LineParser::Find(const char* key, const char** value, size_t* length) const {
  if (fields_ == nullptr) return false;
  const size_t key_length = strlen(key);
  for (const char* field = fields_; field < fields_end_; field += strlen(field) + 1) {
    if (strncmp(field, key, key_length) == 0 && field[key_length] == '=') {
      *value = field + key_length + 1;
      *length = strlen(*value);
      return true;
    }
  }
  return false;
}

bool ParseUInt(const char* text, size_t length, uint32_t* value) {
  if (length == 0 || length > 10) return false;
  uint64_t result = 0;
  for (size_t i = 0; i < length; ++i) {
    if (!IsDigit(text[i])) return false;
    result = result * 10 + static_cast<uint32_t>(text[i] - '0');
  }
  if (result > 0xffffffffu) return false;
  *value = static_cast<uint32_t>(result);
  return true;
}

size_t DecodeHex(const char* hex, size_t hex_length, uint8_t* out, size_t out_capacity) {
  if (hex_length % 2 != 0 || hex_length / 2 > out_capacity || !IsLowerHex(hex, hex_length)) {
    return kBadHex;
  }
  for (size_t i = 0; i < hex_length / 2; ++i) {
    out[i] = static_cast<uint8_t>((LowerHexValue(hex[2 * i]) << 4) |
                                  LowerHexValue(hex[2 * i + 1]));
  }
  return hex_length / 2;
}

// ---- Messages ----

void WriteBoot(WriteFn write, const BootInfo& info) { WriteBoot(write, info, nullptr); }

void WriteBoot(WriteFn write, const BootInfo& info, ExtraFieldsFn extra) {
  MessageWriter w(write);
  w.Begin("BOOT");
  w.Int("v", kVersion);
  w.Text("fw", info.firmware);
  w.Text("board", info.board);
  w.Text("model", info.model_sha256);
  w.UInt("arena", info.arena_bytes);
  w.UInt("used", info.arena_used_bytes);
  w.UInt("ops", info.ops);
  w.TensorSpecs("in", info.inputs, info.num_inputs);
  w.TensorSpecs("out", info.outputs, info.num_outputs);
  w.Text("status", info.ok ? "ok" : "error");
  if (info.max_line != 0) w.UInt("max_line", info.max_line);
  if (info.memory_plan != nullptr) w.Text("plan", info.memory_plan);
  if (extra != nullptr) extra(w);
  w.End();
}

void WriteResult(WriteFn write, uint32_t seq, const char* source, uint32_t micros,
                 const TensorView* outputs, size_t num_outputs) {
  WriteResult(write, seq, source, micros, outputs, num_outputs, nullptr);
}

void WriteResult(WriteFn write, uint32_t seq, const char* source, uint32_t micros,
                 const TensorView* outputs, size_t num_outputs, ExtraFieldsFn extra) {
  MessageWriter w(write);
  w.Begin("RES");
  w.UInt("seq", seq);
  w.Text("src", source);
  w.UInt("us", micros);
  char key[12];
  for (size_t i = 0; i < num_outputs; ++i) {
    const TensorView& out = outputs[i];
    if (out.type != kFloat32) {
      OutputKey('q', i, key);
      w.Values(key, out.type, out.data, out.count);
    }
    OutputKey('f', i, key);
    w.Dequantized(key, out.type, out.data, out.count, out.scale, out.zero_point);
  }
  if (extra != nullptr) extra(w);
  w.End();
}

void WriteError(WriteFn write, int64_t seq, const char* code, int32_t status,
                const char* text) {
  MessageWriter w(write);
  w.Begin("ERR");
  if (seq >= 0 && seq <= 0xffffffff) {
    w.UInt("seq", static_cast<uint32_t>(seq));
  } else {
    w.Text("seq", "-");
  }
  w.Text("code", code);
  w.Int("status", status);
  w.Text("msg", text);
  w.End();
}

int64_t RequestSeq(const LineParser& request) {
  const char* value;
  size_t length;
  uint32_t seq;
  if (!request.Find("seq", &value, &length) || !ParseUInt(value, length, &seq)) return kNoSeq;
  return seq;
}

// ---- InputAssembler ----

namespace {

void WriteLengthError(WriteFn write, uint32_t seq, size_t expected, const char* got_text,
                      size_t got) {
  char text[64];
  size_t at = AppendText(text, 0, sizeof(text), "expected ");
  at = AppendUInt(text, at, sizeof(text), static_cast<uint32_t>(expected));
  at = AppendText(text, at, sizeof(text), got_text);
  at = AppendUInt(text, at, sizeof(text), static_cast<uint32_t>(got));
  AppendText(text, at, sizeof(text), " bytes");
  WriteError(write, seq, kErrBadLength, 0, text);
}

}  // namespace

InputAssembler::InputAssembler(const InputBuffer* inputs, size_t num_inputs)
    : inputs_(inputs), num_inputs_(num_inputs), state_(kIdle), seq_(0), received_(0) {}

size_t InputAssembler::Total() const {
  size_t total = 0;
  for (size_t i = 0; i < num_inputs_; ++i) total += inputs_[i].size;
  return total;
}

bool InputAssembler::Receive(WriteFn write, const LineParser& request, uint32_t* seq) {
  const int64_t parsed_seq = RequestSeq(request);
  if (parsed_seq == kNoSeq) {
    WriteError(write, kNoSeq, kErrBadMessage, 0, "IN needs seq=<uint32>");
    return false;
  }
  const uint32_t request_seq = static_cast<uint32_t>(parsed_seq);
  const char* hex;
  size_t hex_length;
  if (!request.Find("data", &hex, &hex_length) || hex_length % 2 != 0 ||
      !IsLowerHex(hex, hex_length)) {
    WriteError(write, request_seq, kErrBadMessage, 0, "IN needs data=<lower-case hex>");
    return false;
  }
  const char* offset_text;
  const char* final_text;
  size_t offset_length, final_length;
  const bool has_offset = request.Find("offset", &offset_text, &offset_length);
  const bool has_final = request.Find("final", &final_text, &final_length);
  bool complete;
  if (!has_offset && !has_final) {
    complete = ReceiveWhole(write, request_seq, hex, hex_length);
  } else {
    uint32_t offset;
    if (!has_offset || !has_final || !ParseUInt(offset_text, offset_length, &offset) ||
        final_length != 1 || (final_text[0] != '0' && final_text[0] != '1')) {
      WriteError(write, request_seq, kErrBadMessage, 0,
                 "IN chunks need offset=<uint32> and final=0|1");
      return false;
    }
    complete = ReceiveChunk(write, request_seq, offset, final_text[0] == '1', hex, hex_length);
  }
  if (complete) *seq = request_seq;
  return complete;
}

bool InputAssembler::ReceiveWhole(WriteFn write, uint32_t seq, const char* hex,
                                  size_t hex_length) {
  if (state_ == kReceiving) Abandon(write, "another input started");
  state_ = kIdle;
  // Checked before any byte is written, so a refused input changes nothing.
  const size_t total = Total();
  if (hex_length / 2 != total) {
    WriteLengthError(write, seq, total, " bytes, got ", hex_length / 2);
    return false;
  }
  Store(0, hex, total);
  return true;
}

bool InputAssembler::ReceiveChunk(WriteFn write, uint32_t seq, uint32_t offset, bool final,
                                  const char* hex, size_t hex_length) {
  const size_t length = hex_length / 2;
  if (offset == 0) {
    if (state_ == kReceiving) Abandon(write, "another input started");
    state_ = kReceiving;
    seq_ = seq;
    received_ = 0;
  } else if (state_ == kDiscarding && seq == seq_) {
    if (final) state_ = kIdle;
    return false;  // the rest of an input that was already answered
  } else if (state_ != kReceiving || seq != seq_ || offset != received_) {
    const bool same_input = state_ == kReceiving && seq == seq_;
    char text[64];
    if (same_input) {
      size_t at = AppendText(text, 0, sizeof(text), "expected offset=");
      at = AppendUInt(text, at, sizeof(text), static_cast<uint32_t>(received_));
      at = AppendText(text, at, sizeof(text), ", got offset=");
      AppendUInt(text, at, sizeof(text), offset);
    } else {
      AppendText(text, 0, sizeof(text), "no input in progress for this seq (start at offset=0)");
    }
    // Another input in progress stays in progress: this chunk is not part of it.
    if (same_input || state_ != kReceiving) {
      state_ = final ? kIdle : kDiscarding;
      seq_ = seq;
    }
    WriteError(write, seq, kErrBadOffset, 0, text);
    return false;
  }
  const size_t total = Total();
  if (length > total - received_) {
    state_ = final ? kIdle : kDiscarding;
    WriteLengthError(write, seq, total, " bytes, got at least ", received_ + length);
    return false;
  }
  Store(received_, hex, length);
  received_ += length;
  if (!final) return false;
  state_ = kIdle;
  if (received_ != total) {
    WriteLengthError(write, seq, total, " bytes, got ", received_);
    return false;
  }
  return true;
}

void InputAssembler::Abandon(WriteFn write, const char* why) {
  if (state_ != kReceiving) return;
  // Its remaining chunks are dropped: this ERR is the input's one answer.
  state_ = kDiscarding;
  char text[96];
  size_t at = AppendText(text, 0, sizeof(text), why);
  at = AppendText(text, at, sizeof(text), " after ");
  at = AppendUInt(text, at, sizeof(text), static_cast<uint32_t>(received_));
  at = AppendText(text, at, sizeof(text), " of ");
  at = AppendUInt(text, at, sizeof(text), static_cast<uint32_t>(Total()));
  AppendText(text, at, sizeof(text), " bytes");
  WriteError(write, seq_, kErrInputIncomplete, 0, text);
}

// Decodes `length` bytes of hex into the inputs, starting `offset` bytes into their
// concatenation. The caller has checked that they fit.
void InputAssembler::Store(size_t offset, const char* hex, size_t length) {
  size_t input = 0;
  for (size_t i = 0; i < length; ++i) {
    while (offset >= inputs_[input].size) {  // also skips empty tensors
      offset -= inputs_[input].size;
      ++input;
    }
    static_cast<uint8_t*>(inputs_[input].data)[offset++] = static_cast<uint8_t>(
        (LowerHexValue(hex[2 * i]) << 4) | LowerHexValue(hex[2 * i + 1]));
  }
}

void AnswerEcho(WriteFn write, const LineParser& request) {
  const int64_t parsed_seq = RequestSeq(request);
  if (parsed_seq == kNoSeq) {
    WriteError(write, kNoSeq, kErrBadMessage, 0, "ECHO needs seq=<uint32>");
    return;
  }
  const uint32_t seq = static_cast<uint32_t>(parsed_seq);
  const char* hex;
  size_t hex_length;
  if (!request.Find("data", &hex, &hex_length) || hex_length % 2 != 0 ||
      !IsLowerHex(hex, hex_length)) {
    WriteError(write, seq, kErrBadMessage, 0, "ECHO needs data=<lower-case hex>");
    return;
  }
  MessageWriter w(write);
  w.Begin("ECHO");
  w.UInt("seq", seq);
  w.Text("data", hex, hex_length);  // hex digits pass through unencoded
  w.End();
}

}  // namespace tfproto
