{
  "targets": [
    {
      "target_name": "safety_arithmetic_cmake",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_js_build",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["build/Release/safety_arithmetic.node"],
          "action": ["node", "scripts/build-native.js"]
        }
      ]
    }
  ]
}
