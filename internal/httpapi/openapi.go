package httpapi

import (
	_ "embed"
	"net/http"

	"github.com/keyward/keyward/internal/auth"
)

// openAPI is this API's OpenAPI 3.1 document. A test checks it against the registered routes.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the document.
func OpenAPI() []byte { return openAPI }

func serveOpenAPI(w http.ResponseWriter, _ *http.Request, _ *auth.Principal) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openAPI)
	return err
}
