// tinyforge serial protocol v1 (docs/protocol.md): the device side.
//
// Every line the device sends looks like
//   !tf1 RES seq=7 src=host us=2713 q0=-128,-121,120 f0=0,0.02734375,0.96875 *7f847b18
// and ends with "\r\n". MessageWriter streams such a line through a WriteFn with
// a small internal buffer and an incremental CRC, so an output of any size needs
// no big buffer. LineParser reads host lines (HELLO, IN, ECHO) one byte at a time
// into a buffer the caller owns; InputAssembler puts the inputs an IN carries,
// whole or in chunks, into the input tensors, so that buffer stays small
// whatever the model's input size.
//
// Plain C++11: no heap, no exceptions, no RTTI, no printf (the Arduino mbed
// core's printf may lack float support), no TFLM and no Arduino headers.
#ifndef TINYFORGE_TF_PROTOCOL_H_
#define TINYFORGE_TF_PROTOCOL_H_

#include <stddef.h>
#include <stdint.h>

namespace tfproto {

constexpr int kVersion = 1;

// The ERR codes of docs/protocol.md.
constexpr char kErrSchemaVersion[] = "SCHEMA_VERSION";
constexpr char kErrAllocateFailed[] = "ALLOCATE_FAILED";
constexpr char kErrInvokeFailed[] = "INVOKE_FAILED";
constexpr char kErrInputType[] = "INPUT_TYPE";
constexpr char kErrOpResolver[] = "OP_RESOLVER";
constexpr char kErrBadCrc[] = "BAD_CRC";
constexpr char kErrBadMessage[] = "BAD_MESSAGE";
constexpr char kErrBadLength[] = "BAD_LENGTH";
constexpr char kErrLineTooLong[] = "LINE_TOO_LONG";
constexpr char kErrUnknownType[] = "UNKNOWN_TYPE";
constexpr char kErrProtocolVersion[] = "PROTOCOL_VERSION";
constexpr char kErrBadOffset[] = "BAD_OFFSET";
constexpr char kErrInputIncomplete[] = "INPUT_INCOMPLETE";

// Receives the bytes of outgoing lines, in order. Must send all of them.
typedef void (*WriteFn)(const char* data, size_t length);

// Element types of tensors the protocol carries (TFLM's kTfLite* types map 1:1).
enum ValueType { kInt8, kUInt8, kInt16, kInt32, kFloat32 };

const char* ValueTypeName(ValueType type);  // "int8", ..., "float32"
size_t ValueTypeSize(ValueType type);       // bytes per element

// A tensor as the protocol sees it. BOOT uses type, dims, scale and zero_point;
// RES uses type, data, count, scale and zero_point. scale 0 means not quantized.
// dims is `int`, the type of TfLiteIntArray::data, so TFLM's dims are used as
// they are (int32_t is `long` on arm-none-eabi: a cast would break aliasing).
struct TensorView {
  ValueType type;
  const int* dims;
  int num_dims;
  const void* data;
  size_t count;
  float scale;
  int32_t zero_point;
};

// zlib-compatible CRC-32: pass the previous result to continue a running CRC.
uint32_t Crc32(const char* data, size_t length, uint32_t crc = 0);

// Longest text FormatFloat writes ("-1.234567e-38"), plus room to spare.
constexpr size_t kMaxFloatChars = 16;
// Writes `value` with up to 7 significant digits as the protocol specifies and
// returns the number of chars written (not NUL-terminated).
size_t FormatFloat(float value, char* out);
// Decimal integers; out needs 11 chars. Return the number of chars written.
size_t FormatInt(int32_t value, char* out);
size_t FormatUInt(uint32_t value, char* out);

// Streams one message. Usage: Begin("RES"); UInt("seq", 7); ...; End();
// Keys must match [a-z][a-z0-9_]* and types [A-Z]+: a field with an invalid key
// is left out and a message with an invalid type is not sent at all, so the
// writer never puts an invalid line on the wire. Keys must be unique.
class MessageWriter {
 public:
  explicit MessageWriter(WriteFn write);

  void Begin(const char* type);
  // Percent-encodes every byte that is not printable ASCII, and '%' and '!'.
  void Text(const char* key, const char* value);
  void Text(const char* key, const char* value, size_t length);
  void Int(const char* key, int32_t value);
  void UInt(const char* key, uint32_t value);
  // A comma-separated list of raw values: integers, or floats for kFloat32.
  void Values(const char* key, ValueType type, const void* data, size_t count);
  // (q - zero_point) * scale for integer types; the values themselves for kFloat32.
  void Dequantized(const char* key, ValueType type, const void* data, size_t count,
                   float scale, int32_t zero_point);
  // Lower-case hex of `length` bytes.
  void Hex(const char* key, const uint8_t* data, size_t length);
  // BOOT's tensor specs: dtype:shape:scale:zero_point, comma-separated.
  void TensorSpecs(const char* key, const TensorView* tensors, size_t count);
  // Appends " *<crc>\r\n" and sends everything still buffered.
  void End();

 private:
  bool StartField(const char* key);
  void Put(char c);
  void Put(const char* text, size_t length);
  void PutFloat(float value);
  void PutInt(int32_t value);
  void PutUInt(uint32_t value);
  void Flush();

  WriteFn write_;
  uint32_t crc_;
  bool active_;
  size_t used_;
  // Batches small pieces into fewer, larger serial writes.
  char buffer_[64];
};

// Reads host lines one byte at a time. A message starts at the last "!tf" on a
// line (bytes before it are ignored) and ends at '\n' or '\r'. The buffer holds
// one message; messages longer than capacity - 1 bytes are LINE_TOO_LONG and
// the parser carries on at the next line.
class LineParser {
 public:
  enum Result { kNone, kMessage, kError };

  LineParser(char* buffer, size_t capacity);

  // The longest message it accepts (BOOT reports it as max_line).
  size_t max_message() const { return capacity_ - 1; }

  // kMessage: a complete, CRC-valid v1 message is ready (type(), Find()).
  // kError: a line was rejected; error_code() names why (an ERR code).
  Result Feed(char c);

  // Valid after kMessage until the next Feed().
  const char* type() const { return type_; }
  // Finds a field of the current message; the value is also NUL-terminated.
  bool Find(const char* key, const char** value, size_t* length) const;

  // Valid after kError.
  const char* error_code() const { return error_code_; }
  const char* error_text() const { return error_text_; }

 private:
  Result EndLine();
  Result Parse();
  Result Fail(const char* code, const char* text);
  bool ParseFields(char* begin, char* end);

  char* buffer_;
  size_t capacity_;
  size_t length_;
  bool in_message_;
  bool overflow_;
  char previous_[2];
  const char* type_;
  const char* fields_;
  const char* fields_end_;
  const char* error_code_;
  const char* error_text_;
};

// Decimal digits only, at most 4294967295.
bool ParseUInt(const char* text, size_t length, uint32_t* value);

// Lower-case hex only, even length. Returns the number of bytes written to out,
// or kBadHex when the text is not hex or out is too small.
constexpr size_t kBadHex = static_cast<size_t>(-1);
size_t DecodeHex(const char* hex, size_t hex_length, uint8_t* out, size_t out_capacity);

// ---- The messages, so a sketch stays short ----

struct BootInfo {
  const char* firmware;        // tinyforge version
  const char* board;           // board id
  const char* model_sha256;    // 64 lower-case hex chars
  uint32_t arena_bytes;        // configured
  uint32_t arena_used_bytes;   // after AllocateTensors, 0 if it failed
  uint32_t ops;                // ops registered
  const TensorView* inputs;
  size_t num_inputs;
  const TensorView* outputs;
  size_t num_outputs;
  bool ok;
  uint32_t max_line;           // LineParser::max_message(); 0 leaves max_line out
  const char* memory_plan;     // the arena plan TFLM runs; nullptr leaves plan out
};

void WriteBoot(WriteFn write, const BootInfo& info);

// Adds a sketch's own fields to a message before its CRC (BOOT's pipe=, RES's t=).
typedef void (*ExtraFieldsFn)(MessageWriter& writer);
void WriteBoot(WriteFn write, const BootInfo& info, ExtraFieldsFn extra);

// RES: for output i, qi (raw values; not for float32) and fi (dequantized).
void WriteResult(WriteFn write, uint32_t seq, const char* source, uint32_t micros,
                 const TensorView* outputs, size_t num_outputs);
void WriteResult(WriteFn write, uint32_t seq, const char* source, uint32_t micros,
                 const TensorView* outputs, size_t num_outputs, ExtraFieldsFn extra);

// ERR. seq is kNoSeq when the error belongs to no request (sent as "-").
constexpr int64_t kNoSeq = -1;
void WriteError(WriteFn write, int64_t seq, const char* code, int32_t status,
                const char* text);

// The seq of a request (IN, ECHO), or kNoSeq when it has none or it is not a uint32.
int64_t RequestSeq(const LineParser& request);

// A destination for IN data: one per input tensor, in input order.
struct InputBuffer {
  void* data;
  size_t size;
};

// Assembles the inputs IN requests carry into the input buffers, one input at a
// time (docs/protocol.md, section 3.1). An input arrives whole
//   IN seq=<n> data=<hex>
// or in chunks that follow each other byte by byte
//   IN seq=<n> offset=<byte> final=0|1 data=<hex>
// Every input gets exactly one answer: Receive() returns true when it is
// complete (the caller runs it and answers RES), and answers ERR itself when the
// input fails. A failed whole input leaves the buffers unchanged; a failed or
// abandoned chunked input may have written the chunks before the failure.
class InputAssembler {
 public:
  // The buffers are read on every request, not copied: the sketch may point them at other
  // tensors later (a rebuilt interpreter), as long as no input is being assembled.
  InputAssembler(const InputBuffer* inputs, size_t num_inputs);

  // Handles one IN request. True when it completed an input: *seq is its seq and
  // the buffers hold it. False when it took a chunk (no answer yet), ignored the
  // rest of an input that already failed, or answered with ERR.
  bool Receive(WriteFn write, const LineParser& request, uint32_t* seq);

  // Drops the input being assembled, if any, and answers it with ERR
  // INPUT_INCOMPLETE saying `why` (e.g. the interpreter was rebuilt).
  void Abandon(WriteFn write, const char* why);

  // True while a chunked input has started and not ended.
  bool receiving() const { return state_ == kReceiving; }

 private:
  enum State { kIdle, kReceiving, kDiscarding };

  bool ReceiveWhole(WriteFn write, uint32_t seq, const char* hex, size_t hex_length);
  bool ReceiveChunk(WriteFn write, uint32_t seq, uint32_t offset, bool final,
                    const char* hex, size_t hex_length);
  size_t Total() const;  // bytes of all inputs
  void Store(size_t offset, const char* hex, size_t length);

  const InputBuffer* inputs_;
  size_t num_inputs_;
  State state_;
  uint32_t seq_;      // the input being received, or the one whose chunks are dropped
  size_t received_;   // bytes of it so far
};

// Answers an ECHO request with the same seq and data, or ERR BAD_MESSAGE.
void AnswerEcho(WriteFn write, const LineParser& request);

}  // namespace tfproto

#endif  // TINYFORGE_TF_PROTOCOL_H_
