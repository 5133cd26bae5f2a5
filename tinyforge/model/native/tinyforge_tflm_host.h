// The C API of tinyforge's host reference runtime: a board's own TFLM library
// tree compiled for the host (docs/reference.md), loaded by
// tinyforge/model/host_tflm.py with ctypes.
//
// Plain C so ctypes can call it without name mangling. Every function that can
// fail returns a TfhStatus; nothing here throws or aborts on bad arguments.
// What TFLM itself reports (MicroPrintf) goes to file descriptor 2.
#ifndef TINYFORGE_TFLM_HOST_H_
#define TINYFORGE_TFLM_HOST_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bumped whenever a signature or a struct below changes; the Python side
// refuses a library built from other sources (the cache key covers them too).
#define TFH_ABI_VERSION 1
#define TFH_MAX_DIMS 8

// The library is compiled with -fvisibility=hidden: only this API is exported,
// so TFLM's own symbols can never clash with another TFLM loaded in the same
// process (the tflite-micro wheel).
#define TFH_API __attribute__((visibility("default")))

typedef enum {
  kTfhOk = 0,
  kTfhError = 1,          // TFLM returned an error status (details on fd 2)
  kTfhBadArgument = 2,    // an index, a size or a pointer that does not fit
  kTfhNotAllocated = 3,   // AllocateTensors() failed: nothing can run
} TfhStatus;

// A tensor as the interpreter sees it. `type` is TFLM's TfLiteType value.
typedef struct {
  int32_t tensor_index;   // index in subgraph 0, -1 for an optional input left out
  int32_t type;
  int32_t dims_count;
  int32_t dims[TFH_MAX_DIMS];
  uint64_t bytes;
  float scale;            // the first scale, 0 when not quantized
  int32_t zero_point;
} TfhTensorInfo;

typedef struct TfhInterpreter TfhInterpreter;

TFH_API int tfh_abi_version(void);
// sizeof(void*) of this build: the host's pointers are not the board's.
TFH_API int tfh_pointer_bytes(void);

// Builds an interpreter for a copy of `model` on an arena of `arena_size`
// bytes (16-byte aligned, owned by the interpreter), with
// `resource_variables` slots for VAR_HANDLE ops (0 when the model has none),
// and allocates its tensors. Returns NULL only when out of host memory; a
// failed allocation is reported by tfh_allocation_status().
TFH_API TfhInterpreter* tfh_create(const uint8_t* model, size_t model_size,
                                   size_t arena_size,
                                   int32_t resource_variables);
TFH_API void tfh_destroy(TfhInterpreter* interpreter);

// kTfhOk when AllocateTensors() succeeded.
TFH_API TfhStatus tfh_allocation_status(const TfhInterpreter* interpreter);
// MicroInterpreter::arena_used_bytes() after allocation (0 if it failed).
TFH_API size_t tfh_arena_used_bytes(const TfhInterpreter* interpreter);

TFH_API int32_t tfh_input_count(const TfhInterpreter* interpreter);
TFH_API int32_t tfh_output_count(const TfhInterpreter* interpreter);
TFH_API TfhStatus tfh_input_info(const TfhInterpreter* interpreter,
                                 int32_t index, TfhTensorInfo* info);
TFH_API TfhStatus tfh_output_info(const TfhInterpreter* interpreter,
                                  int32_t index, TfhTensorInfo* info);

// `size` must be the tensor's byte size exactly.
TFH_API TfhStatus tfh_set_input(TfhInterpreter* interpreter, int32_t index,
                                const void* data, size_t size);
TFH_API TfhStatus tfh_get_output(const TfhInterpreter* interpreter,
                                 int32_t index, void* data, size_t size);

TFH_API TfhStatus tfh_invoke(TfhInterpreter* interpreter);
// MicroInterpreter::Reset(): variable tensors and resource variables back to
// their initial values, as after the first AllocateTensors().
TFH_API TfhStatus tfh_reset(TfhInterpreter* interpreter);

// Per-operator outputs. While enabled, every tfh_invoke() records, after each
// operator of subgraph 0 runs and in node order, that operator's input and
// output tensors and a copy of its output bytes (ops of other subgraphs run
// inside their caller, e.g. CALL_ONCE, and are not recorded separately).
// Each invoke replaces the previous record.
TFH_API TfhStatus tfh_capture_layers(TfhInterpreter* interpreter,
                                     int32_t enabled);
TFH_API int32_t tfh_layer_count(const TfhInterpreter* interpreter);
// The operator's node index in subgraph 0 and TFLM's name for it.
TFH_API TfhStatus tfh_layer_op(const TfhInterpreter* interpreter, int32_t layer,
                               int32_t* node_index, const char** op_name);
TFH_API int32_t tfh_layer_input_count(const TfhInterpreter* interpreter,
                                      int32_t layer);
TFH_API int32_t tfh_layer_output_count(const TfhInterpreter* interpreter,
                                       int32_t layer);
TFH_API TfhStatus tfh_layer_input(const TfhInterpreter* interpreter,
                                  int32_t layer, int32_t index,
                                  TfhTensorInfo* info);
TFH_API TfhStatus tfh_layer_output(const TfhInterpreter* interpreter,
                                   int32_t layer, int32_t index,
                                   TfhTensorInfo* info);
// Copies the recorded bytes of output `index`; `size` must equal info.bytes.
TFH_API TfhStatus tfh_layer_output_data(const TfhInterpreter* interpreter,
                                        int32_t layer, int32_t index,
                                        void* data, size_t size);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // TINYFORGE_TFLM_HOST_H_
