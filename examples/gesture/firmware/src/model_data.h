// The model flatbuffer, embedded by tinyforge. Defined in model_data.cpp.
#ifndef TINYFORGE_MODEL_DATA_H_
#define TINYFORGE_MODEL_DATA_H_

extern const unsigned char g_model[];
extern const unsigned int g_model_len;

#endif  // TINYFORGE_MODEL_DATA_H_
