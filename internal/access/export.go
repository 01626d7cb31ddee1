package access

import (
	"encoding/csv"
	"io"
	"time"

	"github.com/keyward/keyward/internal/vault"
)

// The two forms of an export (GET /v1/export, keyward vault export): JSON documents and CSV rows.

// Document is one exported key in JSON.
type Document struct {
	Team            string         `json:"team"`
	Identity        vault.Identity `json:"identity"`
	AccessKeyID     string         `json:"AccessKeyId"`
	SecretAccessKey string
	Expiration      string      `json:"Expiration,omitempty"`
	Created         time.Time   `json:"created"`
	State           vault.State `json:"state"`
}

// Documents makes the JSON form of exported keys.
func Documents(creds []Credential) []Document {
	out := make([]Document, 0, len(creds))
	for _, c := range creds {
		d := Document{Team: c.Team, Identity: c.Identity, AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey.Reveal(),
			Created: c.CreatedAt.UTC(), State: c.State}
		if !c.Expiration.IsZero() {
			d.Expiration = c.Expiration.UTC().Format(time.RFC3339)
		}
		out = append(out, d)
	}
	return out
}

// CSVColumns are the columns of the CSV form.
var CSVColumns = []string{"account", "user", "team", "access_key_id", "secret_access_key", "created", "state"}

// WriteCSV writes exported keys as CSV, a header row first.
func WriteCSV(w io.Writer, creds []Credential) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVColumns); err != nil {
		return err
	}
	for _, c := range creds {
		if err := cw.Write([]string{c.Identity.AccountID, c.Identity.UserName, c.Team, c.AccessKeyID, c.SecretAccessKey.Reveal(),
			c.CreatedAt.UTC().Format(time.RFC3339), string(c.State)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
