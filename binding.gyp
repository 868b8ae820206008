# Used only when no prebuild loads: the install script (node-gyp-build) then runs
# `node-gyp rebuild`, and this target hands the build to CMake through scripts/build-native.js
# (cmake-js), which writes build/Release/safety_arithmetic.node and, where nvcc is found,
# build/Release/libsafety_arithmetic_cuda.so. node-gyp compiles nothing itself.
{
  "targets": [
    {
      "target_name": "safety_arithmetic_cmake",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_js_build",
          "inputs": ["CMakeLists.txt", "scripts/build-native.js"],
          "outputs": ["build/Release/safety_arithmetic.node"],
          "action": ["node", "scripts/build-native.js"]
        }
      ]
    }
  ]
}
