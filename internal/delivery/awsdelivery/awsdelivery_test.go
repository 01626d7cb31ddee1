package awsdelivery_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/delivery/awsdelivery"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
)

func payload(s delivery.Spec, keyID, sec, origin string) delivery.Payload {
	return delivery.NewPayload(s, vault.Credential{Version: vault.Version{AccessKeyID: keyID}, SecretAccessKey: secret.New(sec)}, origin)
}

// stages returns the secret's versions by staging label, as DescribeSecret tells them.
func stages(t *testing.T, cfg aws.Config, name string) map[string][]string {
	t.Helper()
	out, err := secretsmanager.NewFromConfig(cfg).DescribeSecret(context.Background(), &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	return out.VersionIdsToStages
}

// putAndWithdraw delivers p, then withdraws it as a rolled-back rotation does.
func putAndWithdraw(t *testing.T, d delivery.Destination, s delivery.Spec, p delivery.Payload, old *delivery.Payload) {
	t.Helper()
	if err := delivery.Put(context.Background(), d, s, p); err != nil {
		t.Fatal(err)
	}
	if err := d.Withdraw(context.Background(), s, p, old); err != nil {
		t.Fatal(err)
	}
}

func labelled(versions map[string][]string, label string) []string {
	var ids []string
	for id, labels := range versions {
		if slices.Contains(labels, label) {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestSecretsManager runs AWS's rotation protocol against moto, every request signed and checked.
func TestSecretsManager(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoWithAdmin(t, 0, nil)
	d := awsdelivery.New(cfg)
	s := delivery.Spec{Kind: delivery.SecretsManager, Name: "keyward/123456789012/alice", Region: "us-east-1", Format: delivery.JSON}
	first := payload(s, "AKIAFIRST00000000001", "first-secret", "rotation/1")

	// A missing secret is created, tagged as Keyward's; its first version is current.
	if err := d.Stage(ctx, s, first); err != nil {
		t.Fatal(err)
	}
	if err := d.Publish(ctx, s, first); err != nil {
		t.Fatal(err)
	}
	desc, err := secretsmanager.NewFromConfig(cfg).DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(s.Name)})
	if err != nil {
		t.Fatal(err)
	}
	if len(desc.Tags) != 1 || aws.ToString(desc.Tags[0].Key) != delivery.TagManaged {
		t.Fatalf("tags: %+v", desc.Tags)
	}
	if got := labelled(desc.VersionIdsToStages, "AWSCURRENT"); len(got) != 1 || got[0] != first.Token {
		t.Fatalf("AWSCURRENT on %v, want the first version %s", got, first.Token)
	}

	// The next key: staged AWSPENDING under the rotation's token (a retry writes nothing new), then
	// AWSCURRENT moves to it and the first becomes AWSPREVIOUS.
	next := payload(s, "AKIANEXT000000000002", "next-secret", "rotation/2")
	for range 2 {
		if err := d.Stage(ctx, s, next); err != nil {
			t.Fatal(err)
		}
	}
	v := stages(t, cfg, s.Name)
	if len(v) != 2 || !slices.Equal(v[next.Token], []string{"AWSPENDING"}) {
		t.Fatalf("after staging twice: %v", v)
	}
	if held, err := d.Current(ctx, s); err != nil || held.KeyID != first.KeyID {
		t.Fatalf("a staged key is current already: %+v %v", held, err)
	}
	for range 2 {
		if err := d.Publish(ctx, s, next); err != nil {
			t.Fatal(err)
		}
	}
	v = stages(t, cfg, s.Name)
	if !slices.Equal(v[next.Token], []string{"AWSCURRENT"}) || !slices.Equal(v[first.Token], []string{"AWSPREVIOUS"}) {
		t.Fatalf("after publishing: %v", v)
	}
	// Consumers ask for AWSCURRENT by label: moto 5.2.1 answers a GetSecretValue without a stage
	// with the version it first had, where AWS answers AWSCURRENT in both cases.
	held, err := d.Current(ctx, s)
	if err != nil || held.KeyID != next.KeyID || !held.Content.Equal(next.Content) {
		t.Fatalf("current: %q %v", held.KeyID, err)
	}

	// Deleting the first key takes only its AWSPREVIOUS label off; another key id takes nothing.
	if err := d.Forget(ctx, s, "AKIAOTHER00000000009"); err != nil || len(labelled(stages(t, cfg, s.Name), "AWSPREVIOUS")) != 1 {
		t.Fatalf("forgetting a key no version holds: %v", err)
	}
	if err := d.Forget(ctx, s, first.KeyID); err != nil {
		t.Fatal(err)
	}
	v = stages(t, cfg, s.Name)
	if len(labelled(v, "AWSPREVIOUS")) != 0 || !slices.Equal(v[next.Token], []string{"AWSCURRENT"}) {
		t.Fatalf("after forgetting the first key: %v", v)
	}

	// A rolled-back rotation: AWSCURRENT goes back to the version before it.
	bad := payload(s, "AKIABAD0000000000003", "bad-secret", "rotation/3")
	putAndWithdraw(t, d, s, bad, &next)
	v = stages(t, cfg, s.Name)
	if !slices.Equal(v[next.Token], []string{"AWSCURRENT"}) || len(v[bad.Token]) != 0 {
		t.Fatalf("after withdrawing: %v", v)
	}
}

// A secret Keyward creates is encrypted with the target's KMS key when it names one.
func TestSecretsManagerKMSKey(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoWithAdmin(t, 0, nil)
	key := testenv.CreateKMSKey(t, cfg)
	d := awsdelivery.New(cfg)
	s := delivery.Spec{Kind: delivery.SecretsManager, Name: "keyward/kms", Region: "us-east-1", Format: delivery.JSON, KMSKeyID: key}
	if err := delivery.Put(ctx, d, s, payload(s, "AKIAFIRST00000000001", "first-secret", "rotation/1")); err != nil {
		t.Fatal(err)
	}
	desc, err := secretsmanager.NewFromConfig(cfg).DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(s.Name)})
	if err != nil || !strings.Contains(aws.ToString(desc.KmsKeyId), key) {
		t.Fatalf("the secret's KMS key: %q %v, want %s", aws.ToString(desc.KmsKeyId), err, key)
	}
}

func TestSecretsManagerLeavesForeignSecrets(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoWithAdmin(t, 0, nil)
	if _, err := secretsmanager.NewFromConfig(cfg).CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("theirs"),
		SecretString: aws.String(`{"AccessKeyId":"AKIATHEIRS0000000000","SecretAccessKey":"x"}`)}); err != nil {
		t.Fatal(err)
	}
	d := awsdelivery.New(cfg)
	s := delivery.Spec{Kind: delivery.SecretsManager, Name: "theirs", Region: "us-east-1", Format: delivery.JSON}
	p := payload(s, "AKIANEXT000000000002", "next-secret", "rotation/2")
	if err := d.Stage(ctx, s, p); !errors.Is(err, delivery.ErrNotOurs) || strings.Contains(err.Error(), "next-secret") {
		t.Fatalf("stage into a foreign secret: %v", err)
	}
	s.Adopt = true
	// The adopted secret's own first value is AWSPREVIOUS: a rollback goes back to it without help.
	putAndWithdraw(t, d, s, p, nil)
	if held, _ := d.Current(ctx, s); held.KeyID != "AKIATHEIRS0000000000" {
		t.Fatalf("after withdrawing, the adopted secret holds %q", held.KeyID)
	}
}

// TestParameterStore writes a SecureString parameter, labelling versions current and previous.
func TestParameterStore(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoWithAdmin(t, 0, nil)
	d := awsdelivery.New(cfg)
	s := delivery.Spec{Kind: delivery.SSMParameter, Name: "/keyward/alice", Region: "us-east-1", Format: delivery.Env}
	first := payload(s, "AKIAFIRST00000000001", "first-secret", "rotation/1")
	next := payload(s, "AKIANEXT000000000002", "next-secret", "rotation/2")
	for _, p := range []delivery.Payload{first, next} {
		for range 2 { // each move twice: a retry after a crash writes nothing new
			if err := delivery.Put(ctx, d, s, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := ssm.NewFromConfig(cfg)
	hist, err := c.GetParameterHistory(ctx, &ssm.GetParameterHistoryInput{Name: aws.String(s.Name), WithDecryption: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.Parameters) != 2 || hist.Parameters[0].Type != ssmtypes.ParameterTypeSecureString ||
		!slices.Equal(hist.Parameters[0].Labels, []string{"previous"}) || !slices.Equal(hist.Parameters[1].Labels, []string{"current"}) {
		t.Fatalf("history: %+v", hist.Parameters)
	}
	got, err := c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(s.Name + ":current"), WithDecryption: aws.Bool(true)})
	if err != nil || aws.ToString(got.Parameter.Value) != next.Content.Reveal() {
		t.Fatalf("name:current: %v", err)
	}
	tags, err := c.ListTagsForResource(ctx, &ssm.ListTagsForResourceInput{ResourceType: ssmtypes.ResourceTypeForTaggingParameter, ResourceId: aws.String(s.Name)})
	if err != nil || len(tags.TagList) != 1 || aws.ToString(tags.TagList[0].Key) != delivery.TagManaged {
		t.Fatalf("tags: %+v %v", tags, err)
	}

	bad := payload(s, "AKIABAD0000000000003", "bad-secret", "rotation/3")
	putAndWithdraw(t, d, s, bad, &next)
	latest, err := c.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(s.Name), WithDecryption: aws.Bool(true)})
	if err != nil || aws.ToString(latest.Parameter.Value) != next.Content.Reveal() {
		t.Fatalf("after withdrawing, the newest value is not the old key (%v)", err)
	}
	if held, err := d.Current(ctx, s); err != nil || held.KeyID != next.KeyID {
		t.Fatalf("current after withdrawing: %q %v", held.KeyID, err)
	}

	// "previous" is on the version of the key before the withdrawn one (next): forgetting another
	// key leaves it; forgetting that key takes it off.
	previous := func() []int64 {
		hist, _ := c.GetParameterHistory(ctx, &ssm.GetParameterHistoryInput{Name: aws.String(s.Name)})
		var out []int64
		for _, p := range hist.Parameters {
			if slices.Contains(p.Labels, "previous") {
				out = append(out, p.Version)
			}
		}
		return out
	}
	if err := d.Forget(ctx, s, first.KeyID); err != nil || !slices.Equal(previous(), []int64{2}) {
		t.Fatalf("forgetting a key no version labelled previous holds: %v, previous on %v", err, previous())
	}
	if err := d.Forget(ctx, s, next.KeyID); err != nil || len(previous()) != 0 {
		t.Fatalf("forgetting the key labelled previous: %v, previous on %v", err, previous())
	}

	// A parameter Keyward did not create is left alone.
	if _, err := c.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String("/theirs"), Value: aws.String("x"), Type: ssmtypes.ParameterTypeSecureString}); err != nil {
		t.Fatal(err)
	}
	theirs := delivery.Spec{Kind: delivery.SSMParameter, Name: "/theirs", Region: "us-east-1", Format: delivery.JSON}
	if err := d.Stage(ctx, theirs, payload(theirs, "AKIANEXT000000000002", "next-secret", "r")); !errors.Is(err, delivery.ErrNotOurs) {
		t.Fatalf("stage into a foreign parameter: %v", err)
	}
}

// Requests are signed: a destination with a key moto does not know is refused.
func TestRefusedWithoutAValidSignature(t *testing.T) {
	cfg := testenv.MotoWithAdmin(t, 0, nil)
	cfg.Credentials = credentials.NewStaticCredentialsProvider("AKIAUNKNOWN000000000", "wrong", "")
	d := awsdelivery.New(cfg)
	s := delivery.Spec{Kind: delivery.SecretsManager, Name: "x", Region: "us-east-1", Format: delivery.JSON}
	if err := d.Stage(context.Background(), s, payload(s, "AKIANEXT000000000002", "next-secret", "r")); err == nil {
		t.Fatal("moto accepted a request signed with an unknown key")
	}
}
