package main

import "github.com/keyward/keyward/internal/rotation"

// faultHook is nil in every normal build: see faults.go (build tag keywardfaults) for the crash tests.
var faultHook rotation.Hook
