package rotation_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/rotation"
)

// TestOnDemandRunner: at most its limit of rotations run at once (one more is refused once its wait
// is over), each under a deadline; Stop cancels those under way, waits until they have returned,
// and refuses any more.
func TestOnDemandRunner(t *testing.T) {
	r := rotation.NewOnDemand(1, time.Hour)
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	if err := r.Go(time.Second, func(ctx context.Context) {
		close(started)
		if _, ok := ctx.Deadline(); !ok {
			done <- errors.New("no deadline")
			return
		}
		select {
		case <-release:
			done <- nil
		case <-ctx.Done():
			done <- ctx.Err()
		}
	}); err != nil {
		t.Fatal(err)
	}
	<-started
	if err := r.Go(20*time.Millisecond, func(context.Context) { t.Error("a second rotation ran past the limit") }); !errors.Is(err, rotation.ErrTooMany) {
		t.Fatalf("a second rotation while one runs, limit 1: %v", err)
	}
	stopped := make(chan struct{})
	go func() { r.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return")
	}
	// Stop returned only after the rotation did, and the rotation saw its context cancelled.
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the rotation under way ended with %v, want cancelled", err)
		}
	default:
		t.Fatal("Stop returned before the rotation under way did")
	}
	if err := r.Go(time.Millisecond, func(context.Context) { t.Error("ran after Stop") }); !errors.Is(err, rotation.ErrTooMany) {
		t.Fatalf("after Stop: %v", err)
	}
	close(release)
}
