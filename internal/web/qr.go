package web

import (
	"fmt"
	"html/template"
	"strings"

	"github.com/boombuler/barcode/qr"

	"github.com/keyward/keyward/internal/secret"
)

// qrSVG draws a secret (an otpauth:// address) as a QR code in SVG, for an authenticator app to
// scan: one path of dark modules, a quiet zone of four around them. The page holding it is the
// answer to a POST, never cached.
func qrSVG(v secret.Value) (template.HTML, error) {
	code, err := qr.Encode(v.Reveal(), qr.M, qr.Auto)
	if err != nil {
		return "", err
	}
	n := code.Bounds().Dx()
	var path strings.Builder
	for y := range n {
		for x := range n {
			if r, _, _, _ := code.At(x, y).RGBA(); r == 0 {
				fmt.Fprintf(&path, "M%d %dh1v1h-1z", x+4, y+4)
			}
		}
	}
	size := n + 8
	return template.HTML(fmt.Sprintf(`<svg class="qr" role="img" aria-label="QR code of your authenticator's seed" viewBox="0 0 %d %d" width="%d" height="%d">`+
		`<rect width="%d" height="%d" fill="#fff"/><path d="%s" fill="#000"/></svg>`, size, size, size*6, size*6, size, size, path.String())), nil
}
