package cloud_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/keyward/keyward/internal/cloud"
	"github.com/keyward/keyward/internal/cloud/sim"
)

func TestObservedReportsEveryCall(t *testing.T) {
	ctx := context.Background()
	s := sim.New()
	s.AddUser("123456789012", "alice", "/", nil)
	var seen []string
	p := cloud.Observed(s, func(op, outcome string) { seen = append(seen, op+":"+outcome) })
	k, err := p.CreateAccessKey(ctx, "123456789012", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ListAccessKeys(ctx, "123456789012", "alice"); err != nil {
		t.Fatal(err)
	}
	_ = p.DeleteAccessKey(ctx, "123456789012", "alice", "AKIAAAAAAAAAAAAAAAAA")
	_ = p.DeleteAccessKey(ctx, "123456789012", "alice", k.ID)
	want := "[CreateAccessKey:ok ListAccessKeys:ok DeleteAccessKey:not_found DeleteAccessKey:ok]"
	if fmt.Sprint(seen) != want {
		t.Fatalf("observed %v, want %s", seen, want)
	}
}
