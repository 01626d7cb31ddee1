package duration_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/duration"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{in: "90d", want: 90 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "10m", want: 10 * time.Minute},
		{in: "1.5h", want: 90 * time.Minute},
		{in: "0s", want: 0},
		{in: " 2d ", want: 48 * time.Hour},
		{in: "", err: "empty duration"},
		{in: "90", err: "use units"},
		{in: "-1d", err: "negative"},
		{in: "-5m", err: "negative"},
		{in: "1.5d", err: "whole number"},
		{in: "d", err: "whole number"},
		{in: "99999999d", err: "too long"},
		{in: "1dxyz", err: "use units"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := duration.Parse(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if back, err := duration.Parse(duration.Format(got)); err != nil || back != got {
				t.Fatalf("String() of %v does not parse back: %q, %v", got, duration.Format(got), err)
			}
		})
	}
}
