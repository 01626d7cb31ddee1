// These tests run against client-go's fake clientset, not a real API server: no kube-apiserver can
// be built or installed here (k8s.io/kubernetes cannot be go-installed — its go.mod has replace
// directives — and no Debian package ships one). The fake keeps objects and applies merge patches
// as the API server does, which is what the delivery and the restart depend on; RBAC refusals are
// made with a reactor that answers as the API server does (403 Forbidden).
package kube_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/delivery/kube"
	"github.com/keyward/keyward/internal/secret"
)

var (
	newKey = delivery.Payload{KeyID: "AKIANEW0000000000000", Secret: secret.New("new/secret+value")}
	oldKey = delivery.Payload{KeyID: "AKIAOLD0000000000000", Secret: secret.New("old/secret+value")}
)

func world(t *testing.T, objects ...runtime.Object) (*kube.Destination, *fake.Clientset) {
	t.Helper()
	c := fake.NewClientset(objects...)
	d := kube.New(slog.New(slog.DiscardHandler))
	d.Clients = func(string) (kubernetes.Interface, error) { return c, nil }
	d.Now = func() time.Time { return time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC) }
	return d, c
}

func deployment(name string) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "apps"}}
}

func spec(restart ...string) delivery.Spec {
	k := &delivery.KubeTarget{Namespace: "apps", Name: "aws-key", Keys: delivery.SecretNames{}.WithDefaults(), Restart: restart}
	return delivery.Spec{Kind: delivery.KubernetesSecret, Name: "apps/aws-key", Kube: k}
}

func restartedAt(t *testing.T, c *fake.Clientset, name string) string {
	t.Helper()
	d, err := c.AppsV1().Deployments("apps").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Annotations[kube.AnnotationRestartedAt]
}

// TestSecretAndRestart: the key is written into a new Secret (labelled as Keyward's) and read back;
// the Deployment is restarted as kubectl rollout restart does, once per key — a second Publish of
// the same key (a retry after a crash) restarts nothing; a new key restarts it again; Withdraw
// writes the old key back; the Secret's other data stays.
func TestSecretAndRestart(t *testing.T) {
	d, c := world(t, deployment("api"))
	ctx := context.Background()
	s := spec("deployment/api")
	if err := d.Stage(ctx, s, newKey); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().Secrets("apps").Get(ctx, "aws-key", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatal("Stage wrote the Secret")
	}
	if err := d.Publish(ctx, s, newKey); err != nil {
		t.Fatal(err)
	}
	sec, _ := c.CoreV1().Secrets("apps").Get(ctx, "aws-key", metav1.GetOptions{})
	if string(sec.Data["AWS_ACCESS_KEY_ID"]) != newKey.KeyID || string(sec.Data["AWS_SECRET_ACCESS_KEY"]) != newKey.Secret.Reveal() ||
		sec.Labels[kube.LabelManagedBy] != "keyward" || sec.Annotations[kube.AnnotationRestartedFor] != newKey.KeyID {
		t.Fatalf("the Secret: %+v %+v", sec.Labels, sec.Annotations)
	}
	if at := restartedAt(t, c, "api"); at != "2026-12-08T10:00:00Z" {
		t.Fatalf("the Deployment was not restarted: %q", at)
	}
	held, err := d.Current(ctx, s)
	if err != nil || held.KeyID != newKey.KeyID || !held.Content.Equal(delivery.JSON.Render(newKey.KeyID, newKey.Secret)) {
		t.Fatalf("Current: %s %v", held.KeyID, err)
	}

	// A retry restarts nothing.
	d.Now = func() time.Time { return time.Date(2026, 12, 8, 11, 0, 0, 0, time.UTC) }
	if err := d.Publish(ctx, s, newKey); err != nil {
		t.Fatal(err)
	}
	if at := restartedAt(t, c, "api"); at != "2026-12-08T10:00:00Z" {
		t.Fatalf("a retry restarted the Deployment again: %q", at)
	}
	// Someone adds data to the Secret; the old key goes back; the data stays; the Deployment restarts.
	sec, _ = c.CoreV1().Secrets("apps").Get(ctx, "aws-key", metav1.GetOptions{})
	sec.Data["REGION"] = []byte("eu-west-1")
	if _, err := c.CoreV1().Secrets("apps").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Withdraw(ctx, s, newKey, &oldKey); err != nil {
		t.Fatal(err)
	}
	sec, _ = c.CoreV1().Secrets("apps").Get(ctx, "aws-key", metav1.GetOptions{})
	if string(sec.Data["AWS_ACCESS_KEY_ID"]) != oldKey.KeyID || string(sec.Data["REGION"]) != "eu-west-1" {
		t.Fatalf("after Withdraw: %s", sec.Data)
	}
	if at := restartedAt(t, c, "api"); at != "2026-12-08T11:00:00Z" {
		t.Fatalf("a changed key did not restart the Deployment: %q", at)
	}
}

// TestRefusals: a Secret Keyward did not create is not written unless adopted; a workload that does
// not exist, and a service account without the permission, are named, and permanent.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "aws-key", Namespace: "apps"}, Data: map[string][]byte{"x": []byte("y")}}
	d, _ := world(t, foreign)
	if err := d.Stage(ctx, spec(), newKey); !errors.Is(err, delivery.ErrNotOurs) {
		t.Fatalf("a foreign Secret: %v", err)
	}
	adopted := spec()
	adopted.Adopt = true
	if err := delivery.Put(ctx, d, adopted, newKey); err != nil {
		t.Fatalf("an adopted Secret: %v", err)
	}

	d, _ = world(t)
	err := d.Stage(ctx, spec("deployment/missing"), newKey)
	var perm interface{ Permanent() bool }
	if err == nil || !strings.Contains(err.Error(), "restart deployment/missing") && !strings.Contains(err.Error(), "read deployment/missing") || !errors.As(err, &perm) {
		t.Fatalf("a missing Deployment: %v", err)
	}

	d, c := world(t)
	c.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "aws-key",
			errors.New(`User "system:serviceaccount:keyward:keyward" cannot create resource "secrets" in API group "" in the namespace "apps"`))
	})
	err = d.Publish(ctx, spec(), newKey)
	if err == nil || !strings.Contains(err.Error(), "needs get, create, update and patch on secrets in namespace apps") || !errors.As(err, &perm) || !perm.Permanent() {
		t.Fatalf("a forbidden create: %v", err)
	}
	if strings.Contains(err.Error(), newKey.Secret.Reveal()) {
		t.Fatal("the error quotes the key")
	}
}
