package gitlab_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/delivery/gitlab"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/testenv"
)

var (
	newKey = delivery.Payload{KeyID: "AKIANEW0000000000000", Secret: secret.New("new/secret+value0123456789")}
	oldKey = delivery.Payload{KeyID: "AKIAOLD0000000000000", Secret: secret.New("old/secret+value0123456789")}
)

func spec(gl *testenv.GitLab, g delivery.GitLabTarget) delivery.Spec {
	g.BaseURL = gl.URL
	g.Names = g.Names.WithDefaults()
	if g.EnvironmentScope == "" {
		g.EnvironmentScope = "*"
	}
	if g.Token.IsZero() {
		g.Token = secret.New("glpat-maintainer0001")
	}
	return delivery.Spec{Kind: delivery.GitLabCI, Name: "projects/" + g.Project + g.Group, GitLab: &g}
}

// TestProjectAndGroupVariables: the key reaches a project's variables (masked, raw, in an
// environment scope beside a variable of the same key in another scope, which is left alone) and a
// group's, is read back, and Withdraw puts the old key back; one JSON variable on request.
func TestProjectAndGroupVariables(t *testing.T) {
	gl := testenv.NewGitLab(t)
	gl.AddProject("acme/mobile")
	gl.AddGroup("acme")
	gl.AddToken("glpat-maintainer0001", testenv.GitLabToken{Sees: []string{"acme"}, Maintainer: true})
	gl.SetVariable("acme/mobile", testenv.GitLabVariable{Key: "AWS_ACCESS_KEY_ID", Value: "AKIASTAGING000000000", EnvironmentScope: "staging"})
	d := gitlab.New(slog.New(slog.DiscardHandler))
	ctx := context.Background()
	for _, tc := range []struct {
		name, path string
		g          delivery.GitLabTarget
	}{
		{"project scope", "acme/mobile", delivery.GitLabTarget{Project: "acme/mobile", EnvironmentScope: "production", Masked: true, Protected: true}},
		{"group", "acme", delivery.GitLabTarget{Group: "acme", Masked: true}},
		{"json", "acme/mobile", delivery.GitLabTarget{Project: "acme/mobile", Names: delivery.SecretNames{JSON: "AWS_CREDENTIALS"}, Masked: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec(gl, tc.g)
			if held, err := d.Current(ctx, s); err != nil || held.KeyID != "" {
				t.Fatalf("Current before: %+v %v", held.KeyID, err)
			}
			if err := delivery.Put(ctx, d, s, newKey); err != nil {
				t.Fatal(err)
			}
			held, err := d.Current(ctx, s)
			if err != nil || held.KeyID != newKey.KeyID || !held.Content.Equal(delivery.JSON.Render(newKey.KeyID, newKey.Secret)) {
				t.Fatalf("Current after: %s %v", held.KeyID, err)
			}
			if tc.name == "json" {
				return
			}
			v, ok := gl.Variable(tc.path, "AWS_ACCESS_KEY_ID", s.GitLab.EnvironmentScope)
			if !ok || !v.Masked || !v.Raw || v.Protected != tc.g.Protected {
				t.Fatalf("the variable: %+v", v)
			}
			if err := d.Withdraw(ctx, s, newKey, &oldKey); err != nil {
				t.Fatal(err)
			}
			if held, _ := d.Current(ctx, s); held.KeyID != oldKey.KeyID {
				t.Fatalf("after Withdraw: %s", held.KeyID)
			}
		})
	}
	if v, _ := gl.Variable("acme/mobile", "AWS_ACCESS_KEY_ID", "staging"); v.Value != "AKIASTAGING000000000" {
		t.Fatalf("the staging variable was changed: %s", v.Value)
	}
}

// TestMasking: a value GitLab cannot mask is refused before anything is written (never written
// unmasked); an older GitLab that refuses a masked raw JSON value gets the same answer from the
// server, and nothing is written unmasked either.
func TestMasking(t *testing.T) {
	for _, tc := range []struct{ value, why string }{{"short", "shorter than 8"}, {"has a space", "white space"}, {"two\nlines!", "white space"}} {
		if err := gitlab.Maskable(tc.value); err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Maskable(%q): %v", tc.value, err)
		}
	}
	if err := gitlab.Maskable(newKey.Secret.Reveal()); err != nil {
		t.Errorf("an AWS secret: %v", err)
	}
	gl := testenv.NewGitLab(t)
	gl.AddProject("acme/mobile")
	gl.AddToken("glpat-maintainer0001", testenv.GitLabToken{Sees: []string{"*"}, Maintainer: true})
	d := gitlab.New(slog.New(slog.DiscardHandler))
	ctx := context.Background()
	short := delivery.Payload{KeyID: "AKIA1", Secret: secret.New("tiny")}
	err := d.Stage(ctx, spec(gl, delivery.GitLabTarget{Project: "acme/mobile", Masked: true}), short)
	var me *gitlab.MaskError
	if !errors.As(err, &me) || me.Variable != "AWS_SECRET_ACCESS_KEY" || strings.Contains(err.Error(), "tiny") {
		t.Fatalf("an unmaskable value: %v", err)
	}
	gl.Strict = true
	err = d.Publish(ctx, spec(gl, delivery.GitLabTarget{Project: "acme/mobile", Masked: true, Names: delivery.SecretNames{JSON: "AWS_CREDENTIALS"}}), newKey)
	if err == nil || !strings.Contains(err.Error(), "nothing was written unmasked") || strings.Contains(err.Error(), newKey.Secret.Reveal()) {
		t.Fatalf("a value an older GitLab will not mask: %v", err)
	}
	if _, ok := gl.Variable("acme/mobile", "AWS_CREDENTIALS", "*"); ok {
		t.Fatal("a variable was written")
	}
}

// TestRefusals: a wrong token, a token that is not a Maintainer, a moved project, a rate limit and a
// 502 are errors that name the target and what to do, never the token or the key.
func TestRefusals(t *testing.T) {
	gl := testenv.NewGitLab(t)
	gl.AddProject("acme/mobile")
	gl.AddToken("glpat-maintainer0001", testenv.GitLabToken{Sees: []string{"*"}, Maintainer: true})
	gl.AddToken("glpat-developer0001", testenv.GitLabToken{Sees: []string{"*"}})
	d := gitlab.New(slog.New(slog.DiscardHandler))
	ctx := context.Background()
	with := func(token, project string) delivery.Spec {
		return spec(gl, delivery.GitLabTarget{Project: project, Masked: true, Token: secret.New(token)})
	}
	for _, tc := range []struct {
		name      string
		spec      delivery.Spec
		before    func()
		status    int
		want      string
		permanent bool
	}{
		{"wrong token", with("glpat-wrong0001", "acme/mobile"), nil, 401, "the token was refused", true},
		{"developer", with("glpat-developer0001", "acme/mobile"), nil, 403, "the Maintainer role on the project acme/mobile", true},
		{"moved project", with("glpat-maintainer0001", "acme/old"), nil, 404, "the project acme/old does not exist, was moved", true},
		{"rate limit", with("glpat-maintainer0001", "acme/mobile"), func() {
			gl.FailNext(1, 429, "Retry later", map[string]string{"Retry-After": "11", "RateLimit-Remaining": "0"})
		}, 429, "trying again in 11s", false},
		{"bad gateway", with("glpat-maintainer0001", "acme/mobile"), func() { gl.FailNext(1, 502, "502 Bad Gateway", nil) }, 502, "GitLab is failing", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			err := d.Publish(ctx, tc.spec, newKey)
			var he *delivery.RefusedError
			if !errors.As(err, &he) || he.Status != tc.status || !strings.Contains(err.Error(), tc.want) || he.Permanent() != tc.permanent {
				t.Fatalf("got %v", err)
			}
			if strings.Contains(err.Error(), "glpat-") || strings.Contains(err.Error(), newKey.Secret.Reveal()) {
				t.Fatalf("the error quotes a token or the key: %v", err)
			}
		})
	}
}
