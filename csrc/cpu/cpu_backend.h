#pragma once
#include "backend/backend_api.h"

namespace sa {
// The CPU backend: always present, multithreaded over the shared thread pool.
const sa_backend* cpu_backend();
}
