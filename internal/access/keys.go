package access

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/vault"
)

// Audit actions of the vault's maintenance.
const (
	ActionKeyImported = "key.imported"
	ActionRewrapped   = "vault.rewrapped"
)

// ErrAccountNeeded: a user name alone does not name one identity the vault knows; the error says why
// (and is also vault.ErrNotFound or vault.ErrAmbiguous).
var ErrAccountNeeded = errors.New("an account is needed")

// accountNeeded is ErrAccountNeeded in its own words, wrapping the vault's reason.
type accountNeeded struct {
	msg string
	err error
}

func (e *accountNeeded) Error() string        { return e.msg }
func (e *accountNeeded) Is(target error) bool { return target == ErrAccountNeeded }
func (e *accountNeeded) Unwrap() error        { return e.err }

// Identity finds the identity of an IAM user name (account "" when the vault knows the name in one
// account only): ErrAccountNeeded when it does not.
func (s *Service) Identity(ctx context.Context, user, account string) (vault.Identity, error) {
	if account != "" {
		id := vault.Identity{Cloud: vault.CloudAWS, AccountID: account, UserName: user}
		return id, id.Validate()
	}
	id, err := s.Vault.Lookup(ctx, user, "")
	switch {
	case errors.Is(err, vault.ErrNotFound):
		return id, &accountNeeded{msg: fmt.Sprintf("the vault has no identity %q yet", user), err: err}
	case errors.Is(err, vault.ErrAmbiguous):
		return id, &accountNeeded{msg: err.Error(), err: err}
	}
	return id, err
}

// Reveal returns an identity's current key to actor, recording the read in the audit trail first: a
// secret is handed over only once its reading is on the record. The API's reads (Credentials) and
// the CLI's (vault get) both come here.
func (s *Service) Reveal(ctx context.Context, actor string, id vault.Identity) (vault.Credential, error) {
	c, err := s.Vault.Current(ctx, id)
	if err != nil {
		return c, err
	}
	return c, s.recordRead(ctx, actor, c, map[string]string{"type": TypeKey})
}

// recordRead puts the reading of c by actor on the record: the one rule before any secret is handed
// over. detail adds to the record's detail (team, via).
func (s *Service) recordRead(ctx context.Context, actor string, c vault.Credential, detail map[string]string) error {
	if err := s.Audit.Record(ctx, readEvent(actor, c, detail)); err != nil {
		return fmt.Errorf("nothing handed over: %w", err)
	}
	return nil
}

// readEvent is the audit record of c's reading by actor (recordRead's, and each of Export's).
func readEvent(actor string, c vault.Credential, detail map[string]string) audit.Event {
	d := map[string]string{"access_key_id": c.AccessKeyID, "version": fmt.Sprint(c.Number)}
	for k, v := range detail {
		if v != "" {
			d[k] = v
		}
	}
	return audit.Event{Actor: actor, Action: ActionKeyRead, Target: c.Identity.String(), Outcome: audit.Success, Detail: d}
}

// Import stores a key whose secret an operator already has as its identity's current version (or
// gives an adopted key its secret), and records it, in one transaction; the data key is made before
// it (the KEK may be AWS KMS).
func (s *Service) Import(ctx context.Context, actor string, id vault.Identity, keyID string, sec secret.Value) (vault.Version, error) {
	p, err := s.Vault.Prepare(ctx, id, keyID, sec)
	if err != nil {
		return vault.Version{}, err
	}
	defer p.Clear()
	var ver vault.Version
	err = s.Store.Atomically(ctx, func(ctx context.Context) error {
		var err error
		if ver, err = s.Vault.ImportPrepared(ctx, p); err != nil {
			return err
		}
		return s.Audit.Record(ctx, audit.Event{Actor: actor, Action: ActionKeyImported, Target: id.String(),
			Outcome: audit.Success, Detail: map[string]string{"access_key_id": keyID, "version": fmt.Sprint(ver.Number)}})
	})
	return ver, err
}

// Rewrap re-wraps every data key under next and records it, all in one transaction or not at all.
func (s *Service) Rewrap(ctx context.Context, actor string, next vault.KEK, progress func(done, total int)) (int, error) {
	from := s.Vault.KEKID()
	return s.Vault.Rewrap(ctx, next, progress, func(ctx context.Context, n int) error {
		return s.Audit.Record(ctx, audit.Event{Actor: actor, Action: ActionRewrapped, Target: "vault", Outcome: audit.Success,
			Detail: map[string]string{"data_keys": fmt.Sprint(n), "from_kek_id": from, "to_kek_id": next.ID()}})
	})
}
