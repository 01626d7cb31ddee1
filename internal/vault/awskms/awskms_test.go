package awskms_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/store/storetest"
	"github.com/keyward/keyward/internal/testenv"
	"github.com/keyward/keyward/internal/vault"
	"github.com/keyward/keyward/internal/vault/awskms"
)

func openVault(t *testing.T, kek vault.KEK) (*vault.Vault, *store.DB) {
	t.Helper()
	db := storetest.Open(t, testenv.Database{Driver: store.SQLite, DSN: filepath.Join(t.TempDir(), "k.db")})
	v, err := vault.New(context.Background(), db.Vault(), storetest.GuardKEK(t, kek)) // KMS never called in a write transaction
	if err != nil {
		t.Fatal(err)
	}
	return v, db
}

var alice = vault.Identity{Cloud: "aws", AccountID: "123456789012", UserName: "alice"}

func TestKMSRoundTrip(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoAWSConfig(t, "eu-west-1")
	keyID := testenv.CreateKMSKey(t, cfg)
	kek, err := awskms.New(ctx, cfg, keyID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(kek.ID(), "aws-kms:arn:aws:kms:eu-west-1:") {
		t.Fatalf("KEK id %q should name the key's ARN", kek.ID())
	}
	v, _ := openVault(t, kek)
	s := secret.New("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	if _, err := v.Import(ctx, alice, "AKIAAAAAAAAAAAAAAAA1", s); err != nil {
		t.Fatal(err)
	}
	c, err := v.Current(ctx, alice)
	if err != nil || !c.SecretAccessKey.Equal(s) {
		t.Fatalf("Current through KMS: %v", err)
	}
}

// TestKMSContextIsBound checks that KMS refuses to unwrap a data key under other associated data.
func TestKMSContextIsBound(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoAWSConfig(t, "eu-west-1")
	kek, err := awskms.New(ctx, cfg, testenv.CreateKMSKey(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	plain, wrapped, err := kek.GenerateDataKey(ctx, []byte("keyward/v1|aws|123456789012|alice|1|AKIA"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := kek.Unwrap(ctx, wrapped, []byte("keyward/v1|aws|123456789012|alice|1|AKIA"))
	if err != nil || string(got) != string(plain) {
		t.Fatalf("Unwrap with the right context: %v", err)
	}
	if _, err := kek.Unwrap(ctx, wrapped, []byte("keyward/v1|aws|123456789012|mallory|1|AKIA")); err == nil {
		t.Fatal("KMS unwrapped a data key under another encryption context")
	}
}

func TestKMSRejectsDisabledKey(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoAWSConfig(t, "eu-west-1")
	keyID := testenv.CreateKMSKey(t, cfg)
	if _, err := kms.NewFromConfig(cfg).DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := awskms.New(ctx, cfg, keyID); err == nil || !strings.Contains(err.Error(), "Disabled") {
		t.Fatalf("New with a disabled key: %v", err)
	}
	if _, err := awskms.New(ctx, cfg, "alias/does-not-exist"); err == nil {
		t.Fatal("New with a missing key succeeded")
	}
}

// TestRewrapBetweenLocalAndKMS moves a vault from a local KEK to KMS and on to another KMS key.
func TestRewrapBetweenLocalAndKMS(t *testing.T) {
	ctx := context.Background()
	cfg := testenv.MotoAWSConfig(t, "eu-west-1")
	local, err := vault.NewLocalKEK(vault.GenerateKeyMaterial())
	if err != nil {
		t.Fatal(err)
	}
	v, db := openVault(t, local)
	s := secret.New("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	if _, err := v.Import(ctx, alice, "AKIAAAAAAAAAAAAAAAA2", s); err != nil {
		t.Fatal(err)
	}
	first, err := awskms.New(ctx, cfg, testenv.CreateKMSKey(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := v.Rewrap(ctx, storetest.GuardKEK(t, first), nil); err != nil || n != 1 {
		t.Fatalf("rewrap local → KMS: %d, %v", n, err)
	}
	second, err := awskms.New(ctx, cfg, testenv.CreateKMSKey(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := v.Rewrap(ctx, storetest.GuardKEK(t, second), nil); err != nil || n != 1 {
		t.Fatalf("rewrap KMS → KMS: %d, %v", n, err)
	}
	if _, err := vault.New(ctx, db.Vault(), first); !errors.Is(err, vault.ErrKEKMismatch) {
		t.Fatalf("opening with the old KMS key: %v", err)
	}
	reopened, err := vault.New(ctx, db.Vault(), second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := reopened.Current(ctx, alice)
	if err != nil || !c.SecretAccessKey.Equal(s) {
		t.Fatalf("Current after two rewraps: %v", err)
	}
}
