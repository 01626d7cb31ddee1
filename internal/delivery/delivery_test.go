package delivery_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/vault"
)

func TestCheckNamesTheFieldAtFault(t *testing.T) {
	ok := delivery.Target{Match: delivery.Match{Team: "payments"}, Kind: delivery.SecretsManager, Name: "keyward/{account}/{team}/{user}"}
	if p := ok.Check(); len(p) != 0 {
		t.Fatalf("a good target: %v", p)
	}
	cases := []struct {
		t          delivery.Target
		field, has string
	}{
		{delivery.Target{Kind: delivery.SecretsManager, Name: "x"}, "match", "at least one"},
		{delivery.Target{Match: delivery.Match{User: "["}, Kind: delivery.SecretsManager, Name: "x"}, "match", `"["`},
		{delivery.Target{Match: delivery.Match{User: "*"}, Kind: "vault", Name: "x"}, "kind", `"vault"`},
		{delivery.Target{Match: delivery.Match{User: "*"}, Kind: delivery.SecretsManager, Name: "k/{usr}"}, "name", "{usr}"},
		{delivery.Target{Match: delivery.Match{User: "*"}, Kind: delivery.SecretsManager, Name: "k/{team}"}, "name", "match.team"},
		{delivery.Target{Match: delivery.Match{User: "*"}, Kind: delivery.SSMParameter, Name: "keyward/{user}"}, "name", "start"},
		{delivery.Target{Match: delivery.Match{User: "*"}, Kind: delivery.SecretsManager, Name: "a b"}, "name", `"a b"`},
		{delivery.Target{Match: delivery.Match{User: "*"}, Kind: delivery.SecretsManager, Name: "x", Format: "yaml"}, "format", `"yaml"`},
		{delivery.Target{Match: delivery.Match{User: "*"}, Kind: delivery.SecretsManager, Name: "x", KMSKeyID: "arn:aws:kms:eu-west-1:12:key/x"}, "kms_key_id", "arn:aws:kms:eu-west-1:12:key/x"},
		{delivery.Target{Match: delivery.Match{User: "*"}, Kind: delivery.SecretsManager, Name: "x", Region: "Europe"}, "region", `"Europe"`},
	}
	for _, c := range cases {
		p := c.t.Check()
		if !strings.Contains(p[c.field], c.has) {
			t.Errorf("%+v: problems %v, want %s naming %s", c.t, p, c.field, c.has)
		}
	}
	for _, k := range []string{"arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", "alias/keyward", "1234abcd-12ab-34cd-56ef-1234567890ab"} {
		if p := (delivery.Target{Match: delivery.Match{User: "*"}, Kind: delivery.SecretsManager, Name: "x", KMSKeyID: k}).Check(); len(p) != 0 {
			t.Errorf("kms_key_id %s: %v", k, p)
		}
	}
}

func TestRouter(t *testing.T) {
	r := &delivery.Router{DefaultRegion: "eu-west-1", Targets: []delivery.Target{
		{Match: delivery.Match{Account: "111111111111"}, Kind: delivery.SecretsManager, Name: "keyward/{account}/{user}"},
		{Match: delivery.Match{User: "ci-*"}, Kind: delivery.SSMParameter, Name: "/ci/{user}", Format: delivery.Env, Region: "us-east-1"},
		{Match: delivery.Match{Team: "payments"}, Kind: delivery.SecretsManager, Name: "teams/{team}"},
		{Match: delivery.Match{User: "*"}, Kind: delivery.SecretsManager, Name: "keyward/{account}/{user}"}, // the same as the first
	}, TeamsOf: func(_ context.Context, id vault.Identity) ([]string, error) {
		if id.UserName == "ci-pay" {
			return []string{"payments"}, nil
		}
		return nil, nil
	}}
	id := vault.Identity{Cloud: "aws", AccountID: "111111111111", UserName: "ci-pay"}
	specs, err := r.For(context.Background(), id, map[string]string{delivery.TagDeliverTo: "ssm_parameter:/extra secrets_manager:teams/payments"})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, s := range specs {
		keys = append(keys, s.Key()+"#"+string(s.Format))
	}
	want := "secrets_manager:eu-west-1:keyward/111111111111/ci-pay#json ssm_parameter:us-east-1:/ci/ci-pay#env " +
		"secrets_manager:eu-west-1:teams/payments#json ssm_parameter:eu-west-1:/extra#json"
	if strings.Join(keys, " ") != want {
		t.Fatalf("targets:\n%s\nwant\n%s", strings.Join(keys, " "), want)
	}
	other := vault.Identity{Cloud: "aws", AccountID: "222222222222", UserName: "bob"}
	if specs, _ := r.For(context.Background(), other, nil); len(specs) != 1 || specs[0].Name != "keyward/222222222222/bob" {
		t.Fatalf("bob: %+v", specs)
	}
	for _, bad := range []string{"vault:x", "secrets_manager:a b", "secrets_manager", "secrets_manager:k/{user}"} {
		if _, err := r.For(context.Background(), other, map[string]string{delivery.TagDeliverTo: bad}); err == nil || !strings.Contains(err.Error(), delivery.TagDeliverTo) {
			t.Errorf("tag %q: %v", bad, err)
		}
	}
}

func TestFormatsCarryTheKeyID(t *testing.T) {
	s := secret.New("wJalr/K7+MDENG")
	for _, f := range delivery.Formats {
		c := f.Render("AKIAIOSFODNN7EXAMPLE", s)
		if !strings.Contains(c.Reveal(), s.Reveal()) {
			t.Errorf("%s: the secret is missing", f)
		}
		if id, err := delivery.KeyID(c); err != nil || id != "AKIAIOSFODNN7EXAMPLE" {
			t.Errorf("%s: key id %q %v", f, id, err)
		}
	}
	if _, err := delivery.KeyID(secret.New(`{"AccessKeyId": "secret-ish`)); err == nil || strings.Contains(err.Error(), "secret-ish") {
		t.Fatalf("a broken value: %v", err)
	}
	a, b := delivery.Token("rotation/1", "t", "AKIA1"), delivery.Token("rotation/1", "t", "AKIA1")
	if a != b || a == delivery.Token("rotation/2", "t", "AKIA1") || len(a) != 36 || a[14] != '4' {
		t.Fatalf("tokens: %s %s", a, b)
	}
}
