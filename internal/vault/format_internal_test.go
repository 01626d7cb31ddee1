package vault

import (
	"context"
	"testing"

	"github.com/keyward/keyward/internal/secret"
)

// TestBothCiphertextFormatsOpen: versions sealed before the data key was made outside the
// transaction (formatBound: the key wrapped with the version number bound in) still open, beside
// the new ones (formatPrepared); and neither opens as another version.
func TestBothCiphertextFormatsOpen(t *testing.T) {
	ctx := context.Background()
	kek, err := NewLocalKEK(GenerateKeyMaterial())
	if err != nil {
		t.Fatal(err)
	}
	v := &Vault{kek: kek}
	id := Identity{Cloud: CloudAWS, AccountID: "123456789012", UserName: "alice"}
	const keyID, secretText = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	old, err := v.sealBytes(ctx, aad(id, 3, keyID), []byte(secretText))
	if err != nil {
		t.Fatal(err)
	}
	p := &Prepared{id: id, accessKeyID: keyID}
	p.secret = secret.New(secretText)
	if p.key, err = v.newDataKey(ctx, versionWrapAAD(id, keyID)); err != nil {
		t.Fatal(err)
	}
	fresh, err := p.sealAs(3)
	if err != nil {
		t.Fatal(err)
	}
	if old.Ciphertext[0] != formatBound || fresh.Ciphertext[0] != formatPrepared {
		t.Fatalf("formats %d and %d", old.Ciphertext[0], fresh.Ciphertext[0])
	}
	for name, sealed := range map[string]Sealed{"bound": old, "prepared": fresh} {
		rec := Record{Version: Version{Identity: id, Number: 3, AccessKeyID: keyID}, Sealed: sealed}
		plain, err := v.open(ctx, rec)
		if err != nil || string(plain) != secretText {
			t.Fatalf("%s: %q, %v", name, plain, err)
		}
		rec.Number = 4
		if _, err := v.open(ctx, rec); err == nil {
			t.Fatalf("%s: opened as another version", name)
		}
	}
}
