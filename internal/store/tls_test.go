package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testenv"
)

// TestPostgresVerifyFull connects with sslmode=verify-full: the server's certificate must chain to
// the given CA and name the host. The server confirms the session is encrypted; another CA is refused.
func TestPostgresVerifyFull(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, Postgres, testenv.PostgresTLSDSN(t, ""))
	if err != nil {
		t.Fatalf("verify-full with the server's CA: %v", err)
	}
	defer db.Close()
	var encrypted bool
	if err := db.sql.QueryRow(`SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&encrypted); err != nil || !encrypted {
		t.Fatalf("session not encrypted: %v %v", encrypted, err)
	}

	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	writeSelfSignedCA(t, otherCA)
	if db, err := Open(ctx, Postgres, testenv.PostgresTLSDSN(t, otherCA)); err == nil {
		db.Close()
		t.Fatal("verify-full accepted a server certificate from another CA")
	}
}

func writeSelfSignedCA(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
