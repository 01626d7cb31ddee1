package delivery

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/keyward/keyward/internal/secret"
)

// Format is how a key is written into a target.
type Format string

// Formats.
const (
	// JSON is {"AccessKeyId": …, "SecretAccessKey": …}: what consumers of the AWS sample rotation read.
	JSON Format = "json"
	// Env is AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=… lines, for an environment file.
	Env Format = "env"
	// INI is a [default] profile of an AWS shared credentials file.
	INI Format = "ini"
)

// Formats lists every format, for messages.
var Formats = []Format{JSON, Env, INI}

// Render writes a key in the format.
func (f Format) Render(keyID string, s secret.Value) secret.Value {
	switch f {
	case Env:
		return secret.New("AWS_ACCESS_KEY_ID=" + keyID + "\nAWS_SECRET_ACCESS_KEY=" + s.Reveal() + "\n")
	case INI:
		return secret.New("[default]\naws_access_key_id = " + keyID + "\naws_secret_access_key = " + s.Reveal() + "\n")
	default:
		b, _ := json.Marshal(struct {
			AccessKeyID     string `json:"AccessKeyId"`
			SecretAccessKey string
		}{keyID, s.Reveal()})
		return secret.New(string(b))
	}
}

// KeyID reads the access key id out of content in any of the formats; "" when it holds none. The
// error never quotes the content.
func KeyID(content secret.Value) (string, error) {
	c := strings.TrimSpace(content.Reveal())
	if strings.HasPrefix(c, "{") {
		var d struct {
			AccessKeyID string `json:"AccessKeyId"`
		}
		if err := json.Unmarshal([]byte(c), &d); err != nil {
			return "", fmt.Errorf("the value is not the JSON of a key")
		}
		return d.AccessKeyID, nil
	}
	sc := bufio.NewScanner(strings.NewReader(c))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(k), "export ")) {
		case "AWS_ACCESS_KEY_ID", "aws_access_key_id":
			return strings.TrimSpace(v), nil
		}
	}
	return "", nil
}
