package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/keyward/keyward/internal/secret"
)

// Problem is one thing wrong with the configuration, placed where the user can find it.
type Problem struct {
	Where string // "keyward.yaml:12", "environment KEYWARD_VAULT_DSN", or "" for defaults
	Key   string // dotted key path: "vault.master_key.source"
	Msg   string
}

func (p Problem) String() string {
	switch {
	case p.Where != "" && p.Key != "":
		return p.Where + ": " + p.Key + ": " + p.Msg
	case p.Key != "":
		return p.Key + ": " + p.Msg
	case p.Where != "":
		return p.Where + ": " + p.Msg
	}
	return p.Msg
}

// Error lists every problem found while loading; Load returns it for any invalid configuration.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	if len(lines) == 1 {
		return "invalid configuration: " + lines[0]
	}
	return "invalid configuration:\n  " + strings.Join(lines, "\n  ")
}

// IsInvalid reports whether err says the configuration is invalid (as opposed to, say, unreadable).
func IsInvalid(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// Source says where Load reads from: a file path ("" for none) and the process environment.
type Source struct {
	Path     string   // the YAML file; "" means defaults and environment only
	Environ  []string // os.Environ() form: KEY=VALUE
	Explicit bool     // the path came from --config, so a missing file is an error
}

// loader carries the state of one Load: where each key was set, and what went wrong.
type loader struct {
	file     string
	where    map[string]string
	problems []Problem
}

func (l *loader) report(where, key, format string, args ...any) {
	l.problems = append(l.problems, Problem{Where: where, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Load reads the configuration: defaults, then the file, then KEYWARD_* environment variables,
// then *_file secrets, and validates the result.
func Load(src Source) (*Config, error) {
	cfg := Default()
	l := &loader{file: src.Path, where: map[string]string{}}

	if src.Path != "" {
		data, err := os.ReadFile(src.Path)
		switch {
		case err == nil:
			l.decodeFile(data, &cfg)
		case errors.Is(err, os.ErrNotExist) && !src.Explicit:
		default:
			return nil, fmt.Errorf("read configuration: %w", err)
		}
	}
	env := environMap(src.Environ)
	l.applyEnv(env, &cfg)
	l.readSecretFiles(&cfg)
	if cfg.Vault.MasterKey.Source == KeySourceEnv && cfg.Vault.MasterKey.Env != "" {
		cfg.Vault.MasterKey.EnvValue = secret.New(env[cfg.Vault.MasterKey.Env])
	}
	for i, t := range cfg.Delivery.Targets {
		if t.TokenEnv != "" && env[t.TokenEnv] != "" {
			cfg.Delivery.Targets[i].TokenEnvValue = secret.New(env[t.TokenEnv])
		}
	}
	// Every problem in one run: the values that could not be read keep their defaults, and the
	// checks across fields run anyway, except on a key already reported (its default would be
	// judged, not what was written).
	read := map[string]bool{}
	for _, p := range l.problems {
		read[p.Key] = true
	}
	cfg.validate(func(key, format string, args ...any) {
		if !read[key] {
			l.report(l.whereOf(key), key, format, args...)
		}
	})
	if len(l.problems) > 0 {
		return nil, &Error{Problems: l.problems}
	}
	return &cfg, nil
}

func environMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func (l *loader) at(n *yaml.Node) string { return fmt.Sprintf("%s:%d", l.file, n.Line) }

func (l *loader) decodeFile(data []byte, cfg *Config) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		l.report(l.file, "", "not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return
	}
	if len(doc.Content) == 0 { // empty file: defaults
		return
	}
	l.decode(doc.Content[0], reflect.ValueOf(cfg).Elem(), "")
}

// isLeaf reports whether values of t are set whole from one YAML value rather than walked key by key:
// anything but a struct, and structs that decode themselves (either of yaml.v3's UnmarshalYAML forms).
func isLeaf(t reflect.Type) bool {
	_, custom := reflect.PointerTo(t).MethodByName("UnmarshalYAML")
	return t.Kind() != reflect.Struct || custom
}

// isStructList reports whether t is a list of structures, walked item by item so that an unknown key
// inside an item is caught too.
func isStructList(t reflect.Type) bool { return t.Kind() == reflect.Slice && !isLeaf(t.Elem()) }

// decode walks n into v, checking every key against the struct so that an unknown key, or a value of
// the wrong kind, is reported with its full key path and line.
func (l *loader) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if path != "" {
		l.where[path] = l.at(n)
	}
	if isStructList(v.Type()) {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.SequenceNode {
			l.report(l.at(n), path, "want a list")
			return
		}
		list := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			l.decode(item, list.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(list)
		return
	}
	if isLeaf(v.Type()) {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			l.report(l.at(n), path, "%s", valueError(err, n, v.Type()))
		}
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		l.report(l.at(n), path, "want a mapping of keys to values")
		return
	}
	fields := yamlFields(v.Type())
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		child := join(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			l.report(l.at(k), child, "unknown key%s", suggest(k.Value, fields))
			continue
		}
		l.decode(val, v.Field(idx), child)
	}
}

// valueError explains why n cannot be a value of type t, quoting the value unless it is secret.
func valueError(err error, n *yaml.Node, t reflect.Type) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err.Error() // our own UnmarshalYAML wrote it
	}
	want := map[reflect.Kind]string{
		reflect.Int: "a whole number", reflect.Int64: "a whole number", reflect.Float64: "a number",
		reflect.Bool: "true or false", reflect.String: "a string", reflect.Slice: "a list",
	}[t.Kind()]
	if want == "" {
		want = "a value of type " + t.String()
	}
	if t == reflect.TypeFor[secret.Value]() || n.Kind != yaml.ScalarNode {
		return "want " + want
	}
	return fmt.Sprintf("want %s (got %q)", want, n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the YAML names of t's fields to their indexes.
func yamlFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			m[name] = i
		}
	}
	return m
}

// suggest offers the closest known key to a misspelt one.
func suggest(key string, fields map[string]int) string {
	best, bestDist := "", 3
	for name := range fields {
		if d := editDistance(key, name); d < bestDist || (d == bestDist && name < best) {
			best, bestDist = name, d
		}
	}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return " (known keys: " + strings.Join(names, ", ") + ")"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Keys lists every configuration key as a dotted path, in declaration order; the keys of a list's
// items follow the list as list[].key.
func Keys() []string {
	var keys []string
	walkLeaves(reflect.TypeFor[Config](), "", func(path string, _ []int, t reflect.Type) {
		keys = append(keys, path)
		if isStructList(t) {
			walkLeaves(t.Elem(), path+"[]", func(sub string, _ []int, _ reflect.Type) { keys = append(keys, sub) })
		}
	})
	return keys
}

func walkLeaves(t reflect.Type, path string, fn func(path string, index []int, t reflect.Type), index ...int) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		idx := append(slices.Clone(index), i)
		if isLeaf(f.Type) {
			fn(join(path, name), idx, f.Type)
		} else {
			walkLeaves(f.Type, join(path, name), fn, idx...)
		}
	}
}

// EnvName is the environment variable that overrides key: vault.master_key.source → KEYWARD_VAULT_MASTER_KEY_SOURCE.
func EnvName(key string) string {
	return "KEYWARD_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// applyEnv sets every key that has a KEYWARD_* variable. A variable that starts like a section
// (KEYWARD_VAULT_…) but names no key is reported, so that a typo does not go unnoticed.
func (l *loader) applyEnv(env map[string]string, cfg *Config) {
	root := reflect.ValueOf(cfg).Elem()
	known := map[string]bool{}
	walkLeaves(root.Type(), "", func(key string, index []int, t reflect.Type) {
		name := EnvName(key)
		known[name] = true
		raw, ok := env[name]
		if !ok {
			return
		}
		where := "environment " + name
		l.where[key] = where
		field := root.FieldByIndex(index)
		if t.Kind() == reflect.String {
			field.SetString(raw)
			return
		}
		if t == reflect.TypeFor[secret.Value]() {
			field.Set(reflect.ValueOf(secret.New(raw)))
			return
		}
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(raw), &n); err != nil || len(n.Content) == 0 {
			l.report(where, key, "not a valid value")
			return
		}
		if isStructList(t) {
			before := len(l.problems)
			l.decode(n.Content[0], field, key)
			for i := before; i < len(l.problems); i++ {
				l.problems[i].Where = where
			}
			return
		}
		if err := n.Content[0].Decode(field.Addr().Interface()); err != nil {
			l.report(where, key, "%s", valueError(err, n.Content[0], t))
		}
	})
	sections := map[string]bool{}
	for name := range yamlFields(root.Type()) {
		sections["KEYWARD_"+strings.ToUpper(name)+"_"] = true
	}
	var unknown []string
	for name := range env {
		if known[name] || name == cfg.Vault.MasterKey.Env {
			continue
		}
		for prefix := range sections {
			if strings.HasPrefix(name, prefix) {
				unknown = append(unknown, name)
			}
		}
	}
	sort.Strings(unknown)
	for _, name := range unknown {
		l.report("environment "+name, "", "names no configuration key (see docs/CONFIG.md)")
	}
}

// readSecretFiles resolves the *_file keys: the secret is the file's content, without a final newline.
func (l *loader) readSecretFiles(cfg *Config) {
	type secretFile struct {
		key, fileKey string
		value        *secret.Value
		file         string
	}
	pairs := []secretFile{
		{"vault.dsn", "vault.dsn_file", &cfg.Vault.DSN, cfg.Vault.DSNFile},
		{"notify.smtp.password", "notify.smtp.password_file", &cfg.Notify.SMTP.Password, cfg.Notify.SMTP.PasswordFile},
		{"auth.oidc.client_secret", "auth.oidc.client_secret_file", &cfg.Auth.OIDC.ClientSecret, cfg.Auth.OIDC.ClientSecretFile},
		{"server.metrics_token", "server.metrics_token_file", &cfg.Server.MetricsToken, cfg.Server.MetricsTokenFile},
	}
	for i := range cfg.Notify.Webhooks {
		key := fmt.Sprintf("notify.webhooks[%d].", i)
		pairs = append(pairs, secretFile{key + "secret", key + "secret_file", &cfg.Notify.Webhooks[i].Secret, cfg.Notify.Webhooks[i].SecretFile})
	}
	for i := range cfg.Notify.Slack {
		key := fmt.Sprintf("notify.slack[%d].", i)
		pairs = append(pairs, secretFile{key + "url", key + "url_file", &cfg.Notify.Slack[i].URL, cfg.Notify.Slack[i].URLFile})
	}
	for _, p := range pairs {
		if p.file == "" {
			continue
		}
		if _, set := l.where[p.key]; set {
			l.report(l.where[p.fileKey], p.fileKey, "set %s or %s, not both", p.key, p.fileKey)
			continue
		}
		data, err := os.ReadFile(p.file)
		if err != nil {
			l.report(l.where[p.fileKey], p.fileKey, "cannot read secret file: %v", err)
			continue
		}
		*p.value = secret.New(strings.TrimRight(string(data), "\r\n"))
		l.where[p.key] = l.where[p.fileKey]
	}
}

// whereOf is where a key was set; an item of a list of values (key[i]) is placed at its list.
func (l *loader) whereOf(key string) string {
	if w, ok := l.where[key]; ok {
		return w
	}
	if i := strings.LastIndexByte(key, '['); i > 0 && strings.HasSuffix(key, "]") {
		return l.where[key[:i]]
	}
	return ""
}
