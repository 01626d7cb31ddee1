// Package delivery puts a rotated key where programs already read it — AWS Secrets Manager and SSM
// Parameter Store — as a step of the rotation protocol: after the new key is verified and before it
// is promoted, every target of the identity holds it as its current value, the old one kept as the
// previous.
//
// A target is written in two moves, as AWS's own rotation protocol does it: Stage writes the new
// value beside the current one (Secrets Manager: a version labelled AWSPENDING, its id the rotation's
// token, so that a retry after a crash sends the same request again) and reads it back; Publish then
// makes it the current one. Both are idempotent, so a crash at any point resumes by running them
// again. Withdraw undoes a Publish when the rotation is rolled back.
package delivery

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/vault"
)

// Kind is the kind of place a key is delivered to.
type Kind string

// Kinds.
const (
	SecretsManager Kind = "secrets_manager"
	SSMParameter   Kind = "ssm_parameter"
)

// Kinds lists every kind, for messages.
var Kinds = []Kind{SecretsManager, SSMParameter, GitHubActions, GitLabCI, KubernetesSecret, CredentialsFile, Exec}

// Spec is one target of one identity, its name resolved.
type Spec struct {
	Kind     Kind
	Name     string // the secret's or parameter's name
	Region   string
	Format   Format
	KMSKeyID string // encrypts a secret Keyward creates; "" for the service's default key
	Adopt    bool   // write to a secret Keyward did not create

	// The settings of the other kinds, their variables filled in (one of them, by Kind).
	GitHub *GitHubTarget
	GitLab *GitLabTarget
	Kube   *KubeTarget
	File   *FileTarget
	Exec   *ExecTarget
}

// Key names the target in records, status and messages: kind, region and name (kind and name for
// the kinds that have no region).
func (s Spec) Key() string {
	if !s.Kind.versioned() {
		return string(s.Kind) + ":" + s.Name
	}
	return string(s.Kind) + ":" + s.Region + ":" + s.Name
}

// Payload is what a target is given: a key rendered in the target's format, and the token that makes
// the writing of it idempotent.
type Payload struct {
	Token   string // a UUID derived from what is delivered (Token)
	KeyID   string
	Content secret.Value
	// Secret is the secret access key alone, for the targets that write the key's two halves apart.
	Secret secret.Value
}

// NewPayload renders a credential in the spec's format, with a token derived from the rotation
// (or repair) that delivers it: the same delivery always sends the same request.
func NewPayload(s Spec, c vault.Credential, origin string) Payload {
	return Payload{Token: Token(origin, s.Key(), c.AccessKeyID), KeyID: c.AccessKeyID,
		Content: s.Format.Render(c.AccessKeyID, c.SecretAccessKey), Secret: c.SecretAccessKey}
}

// Token derives a version-4-shaped UUID from its parts: Secrets Manager's ClientRequestToken, which
// makes PutSecretValue idempotent and names the version it creates.
func Token(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	b := h.Sum(nil)[:16]
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Held is what a target holds as its current value.
type Held struct {
	KeyID   string       // "" when the target does not exist or holds no key
	Content secret.Value // the value itself
	// Unreadable, when set, says why the value cannot be read back (GitHub never returns a secret;
	// a command keeps what it was given): what the target holds is then judged from Keyward's own
	// delivery record, and UpdatedAt (zero: the target is missing, or cannot say).
	Unreadable string
	UpdatedAt  time.Time
	Missing    bool // with Unreadable: the target does not exist
}

// Destination writes targets of one or more kinds. Every method is idempotent; errors never carry a
// target's content.
type Destination interface {
	// Stage writes p beside the target's current value, creating the target when it is missing
	// (tagged as Keyward's), and checks it by reading it back. ErrNotOurs when the target exists,
	// Keyward did not create it and the spec does not adopt it.
	Stage(ctx context.Context, s Spec, p Payload) error
	// Publish makes the staged p the target's current value; the value it replaces becomes the
	// previous one.
	Publish(ctx context.Context, s Spec, p Payload) error
	// Withdraw undoes Publish(p) when a rotation is rolled back: the value before p is current again
	// (old, when the target cannot tell it by itself), and p is no longer staged. A target whose only
	// value is p (created by this rotation) is left as it is: no program read it before.
	Withdraw(ctx context.Context, s Spec, p Payload, old *Payload) error
	// Current reads the target's current value.
	Current(ctx context.Context, s Spec) (Held, error)
	// Forget removes the label "previous" from the value holding keyID, if it has it: the key was
	// deleted. Nothing else is removed.
	Forget(ctx context.Context, s Spec, keyID string) error
}

// ByKind is a Destination made of one per kind.
type ByKind map[Kind]Destination

var _ Destination = ByKind(nil)

func (b ByKind) of(s Spec) (Destination, error) {
	if d := b[s.Kind]; d != nil {
		return d, nil
	}
	return nil, fmt.Errorf("%s: no destination writes %s targets here", s.Key(), s.Kind)
}

// Stage implements Destination.
func (b ByKind) Stage(ctx context.Context, s Spec, p Payload) error {
	d, err := b.of(s)
	if err != nil {
		return err
	}
	return d.Stage(ctx, s, p)
}

// Publish implements Destination.
func (b ByKind) Publish(ctx context.Context, s Spec, p Payload) error {
	d, err := b.of(s)
	if err != nil {
		return err
	}
	return d.Publish(ctx, s, p)
}

// Withdraw implements Destination.
func (b ByKind) Withdraw(ctx context.Context, s Spec, p Payload, old *Payload) error {
	d, err := b.of(s)
	if err != nil {
		return err
	}
	return d.Withdraw(ctx, s, p, old)
}

// Current implements Destination.
func (b ByKind) Current(ctx context.Context, s Spec) (Held, error) {
	d, err := b.of(s)
	if err != nil {
		return Held{}, err
	}
	return d.Current(ctx, s)
}

// Forget implements Destination.
func (b ByKind) Forget(ctx context.Context, s Spec, keyID string) error {
	d, err := b.of(s)
	if err != nil {
		return err
	}
	return d.Forget(ctx, s, keyID)
}

// Put stages p in a target and publishes it: both moves at once, outside a rotation (a target that
// is behind, a repair).
func Put(ctx context.Context, d Destination, s Spec, p Payload) error {
	if err := d.Stage(ctx, s, p); err != nil {
		return err
	}
	return d.Publish(ctx, s, p)
}

// Errors of a Destination, wrapped.
var (
	// ErrNotOurs: the target exists and Keyward did not create it (set adopt to write to it).
	ErrNotOurs = errors.New("not created by Keyward")
	// ErrMismatch: reading back a staged value gave something else.
	ErrMismatch = errors.New("the value read back differs from the value written")
)

// TagManaged marks the secrets and parameters Keyward created.
const TagManaged = "keyward:managed"

// Record says which key one target of one identity was last given.
type Record struct {
	Identity    vault.Identity `json:"-"`
	Target      string         `json:"target"` // Spec.Key
	AccessKeyID string         `json:"access_key_id"`
	DeliveredAt time.Time      `json:"delivered_at"`
}

// Store keeps the delivery records. Record joins the unit of work ctx carries.
type Store interface {
	RecordDelivery(ctx context.Context, r Record) error
	Deliveries(ctx context.Context, id vault.Identity) ([]Record, error)
	// All returns every record, ordered by identity and target.
	All(ctx context.Context) ([]Record, error)
}

// TargetState is one target of one identity: the key it was last given, and whether that is the
// identity's current key.
type TargetState struct {
	Target       string    `json:"target"`
	AccessKeyID  string    `json:"access_key_id,omitempty"` // "" when never given one
	DeliveredAt  time.Time `json:"delivered_at,omitzero"`
	HoldsCurrent bool      `json:"holds_current"`
}

// States merges the targets an identity has (specs) with the records of what targets were given:
// every spec, then every other target a record names (one a tag added, or configured before).
func States(specs []Spec, records []Record, currentKeyID string) []TargetState {
	byTarget := map[string]Record{}
	for _, r := range records {
		byTarget[r.Target] = r
	}
	var out []TargetState
	add := func(target string) {
		r, ok := byTarget[target]
		delete(byTarget, target)
		st := TargetState{Target: target}
		if ok {
			st.AccessKeyID, st.DeliveredAt = r.AccessKeyID, r.DeliveredAt
		}
		st.HoldsCurrent = currentKeyID != "" && st.AccessKeyID == currentKeyID
		out = append(out, st)
	}
	for _, s := range specs {
		add(s.Key())
	}
	for _, r := range records {
		if _, left := byTarget[r.Target]; left {
			add(r.Target)
		}
	}
	return out
}
