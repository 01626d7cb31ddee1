package main

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keyward/keyward/internal/metrics/awsmetrics"
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

// cfnStatements reads a CloudFormation template's IAM policy statements by Sid, each as its sorted
// actions: the short forms (!Sub, !Ref) are tags yaml keeps as plain values.
func cfnStatements(t *testing.T, path string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string][]string{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			var sid string
			var acts []string
			for i := 0; i+1 < len(n.Content); i += 2 {
				switch k, v := n.Content[i].Value, n.Content[i+1]; k {
				case "Sid":
					sid = v.Value
				case "Action":
					if v.Kind == yaml.ScalarNode {
						acts = []string{v.Value}
					}
					for _, a := range v.Content {
						acts = append(acts, a.Value)
					}
				}
			}
			if sid != "" && acts != nil {
				slices.Sort(acts)
				out[sid] = acts
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	return out
}

// TestCloudFormationAndTerraformMatchTheIAMPolicies: the CloudFormation templates grant, statement
// by statement, the actions of deploy/iam's policies (which TestLeastPrivilegeAgainstMoto proves),
// and cfn-lint accepts them; Terraform renders deploy/iam's files themselves (templatefile) with
// the variables its modules pass, into valid JSON, and its files are formatted.
func TestCloudFormationAndTerraformMatchTheIAMPolicies(t *testing.T) {
	vars := samplePolicyVars
	for tmpl, policies := range map[string][]string{
		"keyward-member.yaml":     {"keyward-member-policy.json", "keyward-member-trust-policy.json"},
		"keyward-management.yaml": {"keyward-management-policy.json"},
	} {
		got := cfnStatements(t, filepath.Join("..", "..", "deploy", "cloudformation", tmpl))
		want := map[string][]string{}
		for _, p := range policies {
			for _, s := range deployPolicy(t, p, vars).Statement {
				acts := actions(s)
				slices.Sort(acts)
				want[s.Sid] = acts
			}
		}
		for sid, acts := range want {
			if !slices.Equal(got[sid], acts) {
				t.Errorf("%s, statement %s: actions %v, deploy/iam has %v", tmpl, sid, got[sid], acts)
			}
		}
		for sid := range got {
			// Besides deploy/iam's: the vault key's own policy, and the Lambda function's runtime (its
			// logs, the DSN's secret, its VPC attachment), which only the function needs.
			extra := []string{"TheAccountAdministersTheKey", "KeywardUsesTheKey", "WriteTheFunctionsLogs", "ReadTheVaultsDSN", "AttachToTheVpc"}
			if _, ok := want[sid]; !ok && !slices.Contains(extra, sid) {
				t.Errorf("%s, statement %s: not in deploy/iam", tmpl, sid)
			}
		}
	}
	// The function's configuration names only settings Keyward has (each documented in CONFIG.md).
	raw, err := os.ReadFile("../../deploy/cloudformation/keyward-management.yaml")
	if err != nil {
		t.Fatal(err)
	}
	documented, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	envVars := regexp.MustCompile(`(?m)^\s+(KEYWARD_[A-Z_]+):`).FindAllStringSubmatch(string(raw), -1)
	if len(envVars) < 10 {
		t.Fatalf("only %d KEYWARD_ variables in the function's environment", len(envVars))
	}
	for _, v := range envVars {
		if !strings.Contains(string(documented), "`"+v[1]+"`") {
			t.Errorf("the function sets %s, which is no setting of Keyward's", v[1])
		}
	}
	if out, err := exec.Command("cfn-lint", "../../deploy/cloudformation/keyward-member.yaml", "../../deploy/cloudformation/keyward-management.yaml").CombinedOutput(); err != nil {
		t.Fatalf("cfn-lint: %v\n%s", err, out)
	}

	if out, err := exec.Command("terraform", "fmt", "-check", "-recursive", "-diff", "../../deploy/terraform").CombinedOutput(); err != nil {
		t.Fatalf("terraform fmt -check: %v\n%s", err, out)
	}
	// The modules' own templatefile calls — each file and the names of the variables it is given —
	// rendered by terraform itself (no provider needed for that): a variable a file uses but is not
	// given, or a file that is no longer JSON, fails here.
	call := regexp.MustCompile(`(?s)templatefile\("\$\{path\.module\}/\.\./\.\./iam/([a-z-]+\.json)", \{(.*?)\}\)`)
	name := regexp.MustCompile(`(?m)^\s*(\w+)\s*=`)
	iamDir, _ := filepath.Abs("../../deploy/iam")
	calls := 0
	for _, mod := range []string{"management", "member"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "terraform", mod, "main.tf"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(raw), -1) {
			calls++
			args := strings.ReplaceAll(m[2], ",", "\n")
			var vars []string
			for _, v := range name.FindAllStringSubmatch(args, -1) {
				vars = append(vars, v[1]+` = "x"`)
			}
			expr := `jsonencode(jsondecode(templatefile("` + iamDir + "/" + m[1] + `", { ` + strings.Join(vars, ", ") + ` })))`
			cmd := exec.Command("terraform", "console")
			cmd.Dir = t.TempDir()
			cmd.Stdin = strings.NewReader(expr + "\n")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Statement") {
				t.Errorf("deploy/terraform/%s renders %s: %v\n%s", mod, m[1], err, out)
			}
		}
	}
	if calls != 3 {
		t.Fatalf("%d templatefile calls of deploy/iam's files in the Terraform modules, want 3", calls)
	}
}

// TestDockerfile: no Docker daemon here to build the image, so the test takes the Dockerfile at its
// word: its final stage is distroless and non-root, its health check is `keyward healthcheck`, and
// what it writes is under /var/lib/keyward; its build command, run here, makes a static binary (no
// ELF interpreter, no shared library), which, started with the image's environment (the data
// directory moved to a temporary one), serves, keeps its data there, and answers the health check.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	file := string(raw)
	for _, want := range []string{"FROM gcr.io/distroless/static-debian12:nonroot\n", "USER 65532:65532\n", "WORKDIR /var/lib/keyward\n",
		`CMD ["/usr/local/bin/keyward", "healthcheck"]`, `ENTRYPOINT ["/usr/local/bin/keyward"]`} {
		if !strings.Contains(file, want) {
			t.Errorf("the Dockerfile lost %q", strings.TrimSpace(want))
		}
	}
	build := regexp.MustCompile(`RUN (CGO_ENABLED=0 go build [^\n]+)`).FindStringSubmatch(file)
	if build == nil {
		t.Fatal("no CGO_ENABLED=0 go build in the Dockerfile")
	}
	out := filepath.Join(t.TempDir(), "keyward")
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(build[1], "/out/keyward", out)) // as the image's shell runs it
	cmd.Dir, cmd.Env = "../..", append(os.Environ(), "VERSION=test")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build[1], err, b)
	}
	bin, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	libs, _ := bin.ImportedLibraries()
	for _, p := range bin.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary asks for a dynamic loader: not static")
		}
	}
	bin.Close()
	if len(libs) > 0 {
		t.Fatalf("the binary needs shared libraries: %v", libs)
	}

	data := t.TempDir()
	port := testenv.FreePort(t)
	var env []string
	for _, m := range regexp.MustCompile(`(KEYWARD_[A-Z_]+)=(\S+)`).FindAllStringSubmatch(file, -1) {
		env = append(env, m[1]+"="+strings.ReplaceAll(m[2], "/var/lib/keyward", data))
	}
	env = append(env, baseVars()...)
	env = append(env, "KEYWARD_CLOUD=sim", fmt.Sprintf("KEYWARD_SERVER_LISTEN=127.0.0.1:%d", port))
	check := func() error {
		c := exec.Command(out, "healthcheck")
		c.Env, c.Dir = env, data
		b, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, b)
		}
		return nil
	}
	if err := check(); err == nil {
		t.Fatal("the health check passed with nothing listening")
	}
	serve := exec.Command(out, "serve")
	serve.Env, serve.Dir = env, data
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = serve.Process.Kill(); _ = serve.Wait() }()
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if last = check(); last == nil {
			break
		}
	}
	if last != nil {
		t.Fatalf("the health check never passed: %v", last)
	}
	for _, f := range []string{"keyward.db", "keyward.key"} {
		if _, err := os.Stat(filepath.Join(data, f)); err != nil {
			t.Errorf("the data directory lacks %s: %v", f, err)
		}
	}
}

// helmBinary finds helm: on PATH, or where .ci/run installs it (go install, into GOPATH/bin).
func helmBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		if p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "helm"); fileExists(p) {
			return p
		}
	}
	t.Fatal("helm not found: .ci/run installs it (go install helm.sh/helm/v3/cmd/helm@v3.22.0)")
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestHelmChart: helm lint passes; the rendered chart runs several replicas with the DSN and the
// master key from Secrets, probes on /healthz and /readyz, a read-only non-root container, a
// PodDisruptionBudget, a ServiceMonitor, a NetworkPolicy and (when asked) the rotate --once CronJob;
// Keyward accepts the configuration the chart renders; a KMS master key without its id is refused.
func TestHelmChart(t *testing.T) {
	helm, chart := helmBinary(t), "../../deploy/helm/keyward"
	if out, err := exec.Command(helm, "lint", "--strict", chart).CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	out, err := exec.Command(helm, "template", "r", chart, "--set", "cronJob.enabled=true").CombinedOutput()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	docs := map[string]map[string]any{}
	dec := yaml.NewDecoder(strings.NewReader(string(out)))
	for {
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			break
		}
		if d != nil {
			docs[d["kind"].(string)] = d
		}
	}
	for _, kind := range []string{"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "ServiceMonitor", "NetworkPolicy", "CronJob"} {
		if docs[kind] == nil {
			t.Fatalf("the chart renders no %s:\n%s", kind, out)
		}
	}
	get := func(v any, path ...any) any {
		for _, p := range path {
			switch k := p.(type) {
			case string:
				v = v.(map[string]any)[k]
			case int:
				v = v.([]any)[k]
			}
		}
		return v
	}
	dep := docs["Deployment"]
	container := get(dep, "spec", "template", "spec", "containers", 0)
	for _, c := range []struct {
		path []any
		want any
	}{
		{[]any{"spec", "replicas"}, 3},
		{[]any{"spec", "template", "spec", "containers", 0, "readinessProbe", "httpGet", "path"}, "/readyz"},
		{[]any{"spec", "template", "spec", "containers", 0, "livenessProbe", "httpGet", "path"}, "/healthz"},
		{[]any{"spec", "template", "spec", "containers", 0, "securityContext", "readOnlyRootFilesystem"}, true},
		{[]any{"spec", "template", "spec", "containers", 0, "securityContext", "runAsNonRoot"}, true},
	} {
		if got := get(dep, c.path...); got != c.want {
			t.Errorf("Deployment %v = %v, want %v", c.path, got, c.want)
		}
	}
	if got := get(docs["PodDisruptionBudget"], "spec", "minAvailable"); got != 2 {
		t.Errorf("PodDisruptionBudget minAvailable = %v", got)
	}
	if args := fmt.Sprint(get(docs["CronJob"], "spec", "jobTemplate", "spec", "template", "spec", "containers", 0, "args")); !strings.Contains(args, "rotate --once") {
		t.Errorf("CronJob args %s", args)
	}
	// The container's environment, with the Secrets' values put in, and the rendered keyward.yaml:
	// Keyward accepts them.
	dir := t.TempDir()
	configFile := filepath.Join(dir, "keyward.yaml")
	if err := os.WriteFile(configFile, []byte(get(docs["ConfigMap"], "data", "keyward.yaml").(string)), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "master.key")
	if err := os.WriteFile(keyFile, []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := baseVars()
	for _, e := range container.(map[string]any)["env"].([]any) {
		name := get(e, "name").(string)
		value, _ := e.(map[string]any)["value"].(string)
		switch {
		case get(e, "valueFrom") != nil:
			value = "postgres://keyward@db.example:5432/keyward?sslmode=verify-full"
		case name == "KEYWARD_VAULT_MASTER_KEY_FILE":
			if !strings.HasPrefix(value, "/etc/keyward/master-key/") {
				t.Errorf("the master key file %s is not the Secret's mount", value)
			}
			value = keyFile
		}
		env = append(env, name+"="+value)
	}
	check := exec.Command(binary, "--config", configFile, "config", "check")
	check.Env = env
	if b, err := check.CombinedOutput(); err != nil {
		t.Fatalf("keyward config check with the chart's configuration: %v\n%s", err, b)
	}
	if b, err := exec.Command(helm, "template", "r", chart, "--set", "masterKey.source=aws-kms").CombinedOutput(); err == nil ||
		!strings.Contains(string(b), "masterKey.kmsKeyId is required") {
		t.Fatalf("a KMS master key without its id: %v\n%s", err, b)
	}
}

// TestAlarmsWatchPublishedMetrics: every CloudWatch alarm of the CloudFormation template and the
// Terraform module watches a metric Keyward puts (awsmetrics), and keyward-silent watches the
// scheduler's heartbeat, which a long pass keeps sending — not the end of a pass.
func TestAlarmsWatchPublishedMetrics(t *testing.T) {
	put := map[string]bool{}
	for _, m := range []string{awsmetrics.MetricRotated, awsmetrics.MetricFailed, awsmetrics.MetricBlocked, awsmetrics.MetricHeld,
		awsmetrics.MetricOldestKeyAge, awsmetrics.MetricOverdue, awsmetrics.MetricNotificationsPending, awsmetrics.MetricProgress} {
		put[m] = true
	}
	cfn, err := os.ReadFile("../../deploy/cloudformation/keyward-management.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tf, err := os.ReadFile("../../deploy/terraform/management/main.tf")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`MetricName: (\w+)`).FindAllStringSubmatch(string(cfn), -1) {
		names = append(names, m[1])
	}
	for _, m := range regexp.MustCompile(`"keyward-[a-z-]+"\s+= \["(\w+)"`).FindAllStringSubmatch(string(tf), -1) {
		names = append(names, m[1])
	}
	if len(names) != 10 {
		t.Fatalf("%d alarms found, want 5 in each file: %v", len(names), names)
	}
	for _, n := range names {
		if !put[n] {
			t.Errorf("an alarm watches %s, which Keyward does not put", n)
		}
	}
	silent := regexp.MustCompile(`(?s)KeywardSilentAlarm:.*?MetricName: (\w+)`).FindStringSubmatch(string(cfn))
	tfSilent := regexp.MustCompile(`"keyward-silent"\s+= \["(\w+)"`).FindStringSubmatch(string(tf))
	if silent == nil || silent[1] != awsmetrics.MetricProgress || tfSilent == nil || tfSilent[1] != awsmetrics.MetricProgress {
		t.Fatalf("keyward-silent watches %v / %v, want %s", silent, tfSilent, awsmetrics.MetricProgress)
	}
}
