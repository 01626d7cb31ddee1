package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/testenv"
)

// TestSystemdUnit: deploy/systemd/keyward.service is a unit systemd accepts without a warning,
// keeps the hardening the deployment promises, and starts Keyward with arguments and environment
// that Keyward accepts.
func TestSystemdUnit(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/systemd/keyward.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(raw)
	for _, want := range []string{"ProtectSystem=strict", "NoNewPrivileges=yes", "DynamicUser=yes", "CapabilityBoundingSet=\n",
		"ProtectHome=yes", "PrivateTmp=yes", "MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service", "StateDirectory=keyward"} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lost %q", strings.TrimSpace(want))
		}
	}
	var args []string
	var vars []string
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			args = strings.Fields(v)
		}
		if v, ok := strings.CutPrefix(line, "Environment="); ok {
			vars = append(vars, v)
		}
	}
	if len(args) < 2 || args[0] != "/usr/local/bin/keyward" || args[1] != "serve" {
		t.Fatalf("ExecStart: %q", args)
	}

	// systemd's own check, with the binary where the unit looks for it.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("KEYWARD_TEST_REQUIRE_SERVICES") == "1" {
			t.Fatal("systemd-analyze is missing (Debian's systemd package)")
		}
		t.Skip("systemd-analyze is missing")
	}
	dir := t.TempDir()
	local := filepath.Join(dir, "keyward.service")
	if err := os.WriteFile(local, []byte(strings.Replace(unit, "ExecStart=/usr/local/bin/keyward", "ExecStart="+binary, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", local).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// Keyward accepts the unit's flags and environment: config check with the same, over the
	// example configuration in place of /etc/keyward/keyward.yaml.
	example, err := filepath.Abs("../../examples/keyward.yaml")
	if err != nil {
		t.Fatal(err)
	}
	check := []string{"config", "check"}
	for i := 2; i < len(args); i++ {
		if args[i] == "--config" {
			i++
			check = append(check, "--config", example)
			continue
		}
		check = append(check, args[i])
	}
	e := newEnv(t, testenv.Database{Driver: "sqlite", DSN: filepath.Join(dir, "k.db")}).with(vars...)
	if r := e.must(t, 0, "", check...); strings.Contains(r.stderr, "unknown") {
		t.Fatalf("config check with the unit's settings: %s", r.stderr)
	}
}
