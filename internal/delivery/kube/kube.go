// Package kube delivers keys to a Kubernetes Secret through client-go, with the in-cluster
// configuration or a kubeconfig, and rolls the workloads that read it the way `kubectl rollout
// restart` does: the pod template's kubectl.kubernetes.io/restartedAt annotation is set, so that
// the Deployment, StatefulSet or DaemonSet replaces its pods under its own update strategy.
//
// A Secret has no versions: Stage checks that the Secret can be written (Keyward's, or adopted) and
// that the workloads exist; Publish writes the key into the Secret's data, keeping its other keys,
// and restarts the workloads only when the value changed — the Secret remembers, in the annotation
// keyward.dev/restarted-for, which key its workloads were last restarted for, so that a crash
// between the write and the restart still restarts them once, and a retry never twice.
package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/secret"
)

// Labels and annotations Keyward puts on what it writes.
const (
	LabelManagedBy         = "app.kubernetes.io/managed-by"
	AnnotationRestartedFor = "keyward.dev/restarted-for"
	// AnnotationRestartedAt is the pod template annotation kubectl rollout restart sets.
	AnnotationRestartedAt = "kubectl.kubernetes.io/restartedAt"
)

// Destination writes kubernetes_secret targets.
type Destination struct {
	Log *slog.Logger
	Now func() time.Time
	// Clients makes the clientset of a kubeconfig ("" for the in-cluster configuration).
	Clients func(kubeconfig string) (kubernetes.Interface, error)

	mu      sync.Mutex
	clients map[string]kubernetes.Interface
}

var _ delivery.Destination = (*Destination)(nil)

// New returns a destination that reads kubeconfigs with client-go.
func New(log *slog.Logger) *Destination {
	return &Destination{Log: log, Now: time.Now, Clients: clientset, clients: map[string]kubernetes.Interface{}}
}

func clientset(kubeconfig string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 30 * time.Second
	return kubernetes.NewForConfig(cfg)
}

func (d *Destination) client(s delivery.Spec) (kubernetes.Interface, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.clients[s.Kube.Kubeconfig]; c != nil {
		return c, nil
	}
	c, err := d.Clients(s.Kube.Kubeconfig)
	if err != nil {
		where := "the in-cluster configuration"
		if s.Kube.Kubeconfig != "" {
			where = "kubeconfig " + s.Kube.Kubeconfig
		}
		return nil, fmt.Errorf("%s: %s: %w", s.Key(), where, err)
	}
	if d.clients == nil {
		d.clients = map[string]kubernetes.Interface{}
	}
	d.clients[s.Kube.Kubeconfig] = c
	return c, nil
}

// data is what the key puts into the Secret's data.
func data(k *delivery.KubeTarget, p delivery.Payload) map[string][]byte {
	if k.Keys.JSON != "" {
		return map[string][]byte{k.Keys.JSON: []byte(delivery.JSON.Render(p.KeyID, p.Secret).Reveal())}
	}
	return map[string][]byte{k.Keys.AccessKeyID: []byte(p.KeyID), k.Keys.SecretAccessKey: []byte(p.Secret.Reveal())}
}

// Stage implements delivery.Destination: the Secret is Keyward's (or missing, or adopted) and every
// workload to restart exists.
func (d *Destination) Stage(ctx context.Context, s delivery.Spec, _ delivery.Payload) error {
	c, err := d.client(s)
	if err != nil {
		return err
	}
	k := s.Kube
	sec, err := c.CoreV1().Secrets(k.Namespace).Get(ctx, k.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return d.fail(s, "read the Secret", err)
	case sec.Labels[LabelManagedBy] != "keyward" && !s.Adopt:
		return fmt.Errorf("%s: %w (set adopt: true to write to it)", s.Key(), delivery.ErrNotOurs)
	}
	for _, w := range k.Restart {
		if _, err := d.templateOf(ctx, c, k.Namespace, w); err != nil {
			return d.fail(s, "read "+w, err)
		}
	}
	return nil
}

// Publish implements delivery.Destination.
func (d *Destination) Publish(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	return d.write(ctx, s, p)
}

// Withdraw implements delivery.Destination: the old key is written back (the workloads restarted
// again); without it (a Secret first written by this rotation) it is left as it is.
func (d *Destination) Withdraw(ctx context.Context, s delivery.Spec, _ delivery.Payload, old *delivery.Payload) error {
	if old == nil {
		return nil
	}
	return d.write(ctx, s, *old)
}

// Current implements delivery.Destination.
func (d *Destination) Current(ctx context.Context, s delivery.Spec) (delivery.Held, error) {
	c, err := d.client(s)
	if err != nil {
		return delivery.Held{}, err
	}
	sec, err := c.CoreV1().Secrets(s.Kube.Namespace).Get(ctx, s.Kube.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return delivery.Held{}, nil
	} else if err != nil {
		return delivery.Held{}, d.fail(s, "read the Secret", err)
	}
	k := s.Kube
	if k.Keys.JSON != "" {
		content := secret.New(string(sec.Data[k.Keys.JSON]))
		id, err := delivery.KeyID(content)
		if err != nil {
			return delivery.Held{}, fmt.Errorf("%s: %s does not hold a key in JSON", s.Key(), k.Keys.JSON)
		}
		return delivery.Held{KeyID: id, Content: content}, nil
	}
	id := string(sec.Data[k.Keys.AccessKeyID])
	if id == "" {
		return delivery.Held{}, nil
	}
	return delivery.Held{KeyID: id, Content: delivery.JSON.Render(id, secret.New(string(sec.Data[k.Keys.SecretAccessKey])))}, nil
}

// Forget implements delivery.Destination: a Secret has no label to take off.
func (d *Destination) Forget(context.Context, delivery.Spec, string) error { return nil }

// write puts p into the Secret (created when missing, its other data kept), then restarts the
// workloads unless the Secret says they were restarted for this key already.
func (d *Destination) write(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	c, err := d.client(s)
	if err != nil {
		return err
	}
	k := s.Kube
	secrets := c.CoreV1().Secrets(k.Namespace)
	want := data(k, p)
	sec, err := secrets.Get(ctx, k.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		sec = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: k.Name, Namespace: k.Namespace,
			Labels: map[string]string{LabelManagedBy: "keyward"}}, Type: corev1.SecretTypeOpaque, Data: want}
		if sec, err = secrets.Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			return d.fail(s, "create the Secret", err)
		}
	case err != nil:
		return d.fail(s, "read the Secret", err)
	case sec.Labels[LabelManagedBy] != "keyward" && !s.Adopt:
		return fmt.Errorf("%s: %w (set adopt: true to write to it)", s.Key(), delivery.ErrNotOurs)
	case !holds(sec, want):
		if sec.Data == nil {
			sec.Data = map[string][]byte{}
		}
		for name, v := range want {
			sec.Data[name] = v
		}
		if sec, err = secrets.Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			return d.fail(s, "update the Secret", err)
		}
	}
	if len(k.Restart) == 0 || sec.Annotations[AnnotationRestartedFor] == p.KeyID {
		return nil
	}
	now := d.Now().UTC().Format(time.RFC3339)
	for _, w := range k.Restart {
		if err := d.restart(ctx, c, k.Namespace, w, now); err != nil {
			return d.fail(s, "restart "+w, err)
		}
	}
	// Remember the restart, so that a retry does not restart the workloads again.
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationRestartedFor: p.KeyID}}})
	if _, err := secrets.Patch(ctx, k.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return d.fail(s, "record the restart on the Secret", err)
	}
	return nil
}

func holds(sec *corev1.Secret, want map[string][]byte) bool {
	for name, v := range want {
		if string(sec.Data[name]) != string(v) {
			return false
		}
	}
	return true
}

// restart patches the workload's pod template with the restartedAt annotation, as kubectl rollout
// restart does (a strategic merge patch of spec.template.metadata.annotations).
func (d *Destination) restart(ctx context.Context, c kubernetes.Interface, namespace, workload, at string) error {
	kind, name, _ := strings.Cut(workload, "/")
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
		"annotations": map[string]string{AnnotationRestartedAt: at}}}}})
	var err error
	switch kind {
	case "deployment":
		_, err = c.AppsV1().Deployments(namespace).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	case "statefulset":
		_, err = c.AppsV1().StatefulSets(namespace).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	case "daemonset":
		_, err = c.AppsV1().DaemonSets(namespace).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	default:
		err = fmt.Errorf("%q: want deployment/NAME, statefulset/NAME or daemonset/NAME", workload)
	}
	return err
}

// templateOf reads a workload's pod template annotations (to check it exists).
func (d *Destination) templateOf(ctx context.Context, c kubernetes.Interface, namespace, workload string) (map[string]string, error) {
	kind, name, _ := strings.Cut(workload, "/")
	switch kind {
	case "deployment":
		o, err := c.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return o.Spec.Template.Annotations, nil
	case "statefulset":
		o, err := c.AppsV1().StatefulSets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return o.Spec.Template.Annotations, nil
	case "daemonset":
		o, err := c.AppsV1().DaemonSets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return o.Spec.Template.Annotations, nil
	}
	return nil, fmt.Errorf("%q: want deployment/NAME, statefulset/NAME or daemonset/NAME", workload)
}

// PermanentError is a refusal of the API server that trying again will not lift.
type PermanentError struct{ error }

// Permanent reports true.
func (PermanentError) Permanent() bool { return true }

func (e PermanentError) Unwrap() error { return e.error }

// fail says what was being done, and what is missing when the API server refused it. The API
// server's messages name objects, never a Secret's data.
func (d *Destination) fail(s delivery.Spec, doing string, err error) error {
	k := s.Kube
	switch {
	case apierrors.IsForbidden(err):
		return PermanentError{fmt.Errorf("%s: %s: %w: Keyward's service account needs get, create, update and patch on secrets in namespace %s%s",
			s.Key(), doing, err, k.Namespace, restartRule(k))}
	case apierrors.IsUnauthorized(err):
		return PermanentError{fmt.Errorf("%s: %s: %w: the credentials of the kubeconfig (or the service account token) were refused", s.Key(), doing, err)}
	case apierrors.IsNotFound(err):
		return PermanentError{fmt.Errorf("%s: %s: %w", s.Key(), doing, err)}
	}
	return fmt.Errorf("%s: %s: %w", s.Key(), doing, err)
}

func restartRule(k *delivery.KubeTarget) string {
	if len(k.Restart) == 0 {
		return ""
	}
	return ", and get and patch on the workloads to restart (" + strings.Join(k.Restart, ", ") + ")"
}
