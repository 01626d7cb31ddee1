package delivery

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/keyward/keyward/internal/secret"
)

// Memory is an in-memory Destination for the demo and unit tests: every target is a list of
// versions, each with its token and labels, with Secrets Manager's rules (one version per label; the
// first version is current; moving "current" moves "previous" to the version it leaves). Fail, when
// set, is asked before every write and may refuse it.
type Memory struct {
	mu      sync.Mutex
	targets map[string][]memVersion
	foreign map[string]bool
	// Fail, when set, is called before every write with the target's key and the method's name; its
	// error is returned.
	Fail func(target, method string) error
	// Writes counts the writes of each content token (a second Stage of one token writes nothing).
	Writes map[string]int
}

type memVersion struct {
	token   string
	content secret.Value
	labels  []string
}

// NewMemory returns an empty in-memory destination.
func NewMemory() *Memory {
	return &Memory{targets: map[string][]memVersion{}, foreign: map[string]bool{}, Writes: map[string]int{}}
}

// AddForeign makes a target that Keyward did not create.
func (m *Memory) AddForeign(s Spec, content secret.Value) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.targets[s.Key()] = []memVersion{{token: "foreign", content: content, labels: []string{"current"}}}
	m.foreign[s.Key()] = true
}

func (m *Memory) check(s Spec, method string) error {
	if m.Fail != nil {
		if err := m.Fail(s.Key(), method); err != nil {
			return fmt.Errorf("%s %s: %w", method, s.Key(), err)
		}
	}
	if m.foreign[s.Key()] && !s.Adopt {
		return fmt.Errorf("%s: %w", s.Key(), ErrNotOurs)
	}
	return nil
}

func (m *Memory) find(key, token, label string) int {
	for i, v := range m.targets[key] {
		if (token != "" && v.token == token) || (label != "" && slices.Contains(v.labels, label)) {
			return i
		}
	}
	return -1
}

func (m *Memory) move(key, label string, to int) {
	vs := m.targets[key]
	for i := range vs {
		vs[i].labels = slices.DeleteFunc(vs[i].labels, func(l string) bool { return l == label })
	}
	if to >= 0 {
		vs[to].labels = append(vs[to].labels, label)
	}
}

// Stage implements Destination.
func (m *Memory) Stage(_ context.Context, s Spec, p Payload) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(s, "Stage"); err != nil {
		return err
	}
	k := s.Key()
	if i := m.find(k, p.Token, ""); i >= 0 {
		if !m.targets[k][i].content.Equal(p.Content) {
			return fmt.Errorf("%s: %w", k, ErrMismatch)
		}
		return nil
	}
	m.Writes[p.Token]++
	m.targets[k] = append(m.targets[k], memVersion{token: p.Token, content: p.Content})
	if len(m.targets[k]) == 1 {
		m.move(k, "current", 0)
	}
	return nil
}

// Publish implements Destination.
func (m *Memory) Publish(_ context.Context, s Spec, p Payload) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(s, "Publish"); err != nil {
		return err
	}
	k := s.Key()
	i := m.find(k, p.Token, "")
	if i < 0 {
		return fmt.Errorf("publish %s: not staged", k)
	}
	if cur := m.find(k, "", "current"); cur != i {
		m.move(k, "previous", cur)
		m.move(k, "current", i)
	}
	return nil
}

// Withdraw implements Destination.
func (m *Memory) Withdraw(_ context.Context, s Spec, p Payload, old *Payload) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(s, "Withdraw"); err != nil {
		return err
	}
	k := s.Key()
	i := m.find(k, p.Token, "")
	if i < 0 || !slices.Contains(m.targets[k][i].labels, "current") {
		return nil
	}
	back := m.find(k, "", "previous")
	if back < 0 || back == i {
		if old == nil {
			return nil // created by the rotation being rolled back: nothing to go back to
		}
		m.targets[k] = append(m.targets[k], memVersion{token: old.Token, content: old.Content})
		back = len(m.targets[k]) - 1
	}
	m.move(k, "current", back)
	m.targets[k][i].labels = nil
	return nil
}

// Current implements Destination.
func (m *Memory) Current(_ context.Context, s Spec) (Held, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := m.find(s.Key(), "", "current")
	if i < 0 {
		return Held{}, nil
	}
	c := m.targets[s.Key()][i].content
	id, err := KeyID(c)
	return Held{KeyID: id, Content: c}, err
}

// Previous returns the key id of the version labelled previous ("" when none is).
func (m *Memory) Previous(s Spec) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := m.find(s.Key(), "", "previous")
	if i < 0 {
		return ""
	}
	id, _ := KeyID(m.targets[s.Key()][i].content)
	return id
}

// Forget implements Destination.
func (m *Memory) Forget(_ context.Context, s Spec, keyID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(s, "Forget"); err != nil {
		return err
	}
	k := s.Key()
	if i := m.find(k, "", "previous"); i >= 0 {
		if id, _ := KeyID(m.targets[k][i].content); id == keyID {
			m.move(k, "previous", -1)
		}
	}
	return nil
}
