package web

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"sync"
)

// robotsTxt keeps every crawler out: nothing of Keyward belongs in a search index.
const robotsTxt = "User-agent: *\nDisallow: /\n"

// favicon is a 32×32 icon (a key's ring and shaft in the header's colour) in the ICO format
// browsers ask /favicon.ico for: one directory entry holding a PNG, as ICO allows since Vista.
var favicon = sync.OnceValue(func() []byte {
	const size = 32
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	ink := color.NRGBA{R: 0x1f, G: 0x3a, B: 0x5f, A: 0xff}
	for y := range size {
		for x := range size {
			dx, dy := x-10, y-16
			ring := dx*dx+dy*dy <= 64 && dx*dx+dy*dy >= 16
			shaft := x >= 17 && x <= 29 && y >= 14 && y <= 17
			tooth := (x >= 23 && x <= 25 || x >= 27 && x <= 29) && y > 17 && y <= 21
			if ring || shaft || tooth {
				img.Set(x, y, ink)
			}
		}
	}
	var p bytes.Buffer
	_ = png.Encode(&p, img)
	var ico bytes.Buffer
	le := func(v any) { _ = binary.Write(&ico, binary.LittleEndian, v) }
	le([3]uint16{0, 1, 1})                 // reserved, type 1 (icon), one image
	le([4]uint8{size, size, 0, 0})         // width, height, no palette, reserved
	le([2]uint16{1, 32})                   // colour planes, bits per pixel
	le([2]uint32{uint32(p.Len()), 6 + 16}) // the image's size and where it starts
	ico.Write(p.Bytes())
	return ico.Bytes()
})

func serveFavicon(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "image/x-icon")
	w.Header().Set("Cache-Control", "public, max-age=86400")
	_, _ = w.Write(favicon())
}

func serveRobots(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(robotsTxt))
}
