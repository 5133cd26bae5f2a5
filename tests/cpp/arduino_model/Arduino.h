// Part of a model of the Arduino mbed core and the Nano 33 BLE Sense's sensor libraries, for
// compiling firmware_templates/runtime/arduino/board_sensors_arduino.cpp with the host g++
// (tests/test_board_sensors.py). Only what that file uses, with the libraries' semantics as
// read in their sources (docs/boards.md). Not part of any firmware.
#ifndef TINYFORGE_MODEL_ARDUINO_H_
#define TINYFORGE_MODEL_ARDUINO_H_

#include <stddef.h>
#include <stdint.h>

#endif  // TINYFORGE_MODEL_ARDUINO_H_
