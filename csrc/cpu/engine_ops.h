#pragma once
#include "engine/ops.h"

namespace sa {
// The CPU implementation of the engine's operations: float32 math over the shared thread pool.
engine::DeviceOps* cpu_engine_ops();
}
