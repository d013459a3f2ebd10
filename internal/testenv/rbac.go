package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Names of the manager's and the check-in service's identities, as
// config/default and make dev create them.
const (
	// NamePrefix is the prefix kustomize (config/default) gives every name.
	NamePrefix            = "itmanager-"
	OperatorNamespace     = "itmanager-system"
	DevicesNamespace      = "itmanager-devices"
	ManagerServiceAccount = "itmanager-controller-manager"
	// UpgradesNamespace is where node upgrade Jobs run, as the
	// ServiceAccount NodeUpgradeServiceAccount; Pod Security privileged.
	UpgradesNamespace         = "itmanager-upgrades"
	NodeUpgradeServiceAccount = "itmanager-node-upgrade"
	CheckinServiceAccount     = "itmanager-checkin"
)

// privileged labels the upgrades namespace: its Jobs run privileged with
// the host's root filesystem, and nothing else runs there.
var privileged = map[string]string{
	"pod-security.kubernetes.io/enforce": "privileged",
	"pod-security.kubernetes.io/audit":   "privileged",
	"pod-security.kubernetes.io/warn":    "privileged",
}

// ReadObjects decodes every object of a multi-document YAML file.
func ReadObjects(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

// ManagerConfig creates the operator, devices and upgrades namespaces, the
// manager's ServiceAccount, the node upgrade Jobs' ServiceAccount (no
// token), and exactly the ClusterRole and Roles that controller-gen
// generated from the RBAC markers (config/rbac/role.yaml) plus the "bind"
// role of config/rbac/bind_role.yaml, each bound to that
// ServiceAccount, and returns a rest.Config that authenticates as it with a
// bound token. A manager run with it has the permissions the chart grants,
// so a missing RBAC marker fails tests and make dev.
func (e *Environment) ManagerConfig(ctx context.Context) (*rest.Config, error) {
	return e.serviceAccountConfig(ctx, ManagerServiceAccount, "role.yaml", "bind_role.yaml")
}

// CheckinConfig creates the check-in service's ServiceAccount with exactly
// the hand-written RBAC of config/rbac/checkin_role.yaml (get Devices,
// patch devices/status, get and update Leases in the devices namespace) and
// returns a rest.Config that authenticates as it with a bound token.
func (e *Environment) CheckinConfig(ctx context.Context) (*rest.Config, error) {
	return e.serviceAccountConfig(ctx, CheckinServiceAccount, "checkin_role.yaml")
}

// serviceAccountConfig creates the operator and devices namespaces, the
// ServiceAccount name in the operator namespace and the roles of the given
// files under config/rbac (named as kustomize names them), each bound to
// it, and returns a rest.Config with a bound token of it.
func (e *Environment) serviceAccountConfig(ctx context.Context, name string, roleFiles ...string) (*rest.Config, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	admin, err := client.New(e.Config, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, err
	}
	for nsName, labels := range map[string]map[string]string{OperatorNamespace: nil, DevicesNamespace: nil, UpgradesNamespace: privileged} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName, Labels: labels}}
		if err := admin.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create namespace %s: %w", nsName, err)
		}
	}
	upgrader := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: UpgradesNamespace, Name: NodeUpgradeServiceAccount},
		AutomountServiceAccountToken: ptr.To(false)}
	if err := admin.Create(ctx, upgrader); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create ServiceAccount %s/%s: %w", UpgradesNamespace, NodeUpgradeServiceAccount, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: OperatorNamespace, Name: name}}
	if err := admin.Create(ctx, sa); err != nil {
		return nil, fmt.Errorf("create ServiceAccount %s: %w", name, err)
	}
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: OperatorNamespace, Name: name}
	var roles []*unstructured.Unstructured
	for _, f := range roleFiles {
		objs, err := ReadObjects(filepath.Join(root, "config", "rbac", f))
		if err != nil {
			return nil, err
		}
		roles = append(roles, objs...)
	}
	for _, role := range roles {
		roleName := NamePrefix + role.GetName()
		role.SetName(roleName)
		var binding client.Object
		switch role.GetKind() {
		case "ClusterRole":
			binding = &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: roleName},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roleName},
				Subjects:   []rbacv1.Subject{subject},
			}
		case "Role":
			binding = &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Namespace: role.GetNamespace(), Name: roleName},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: roleName},
				Subjects:   []rbacv1.Subject{subject},
			}
		default:
			return nil, fmt.Errorf("config/rbac: unexpected %s %s", role.GetKind(), role.GetName())
		}
		for _, obj := range []client.Object{role, binding} {
			if err := admin.Create(ctx, obj); err != nil {
				return nil, fmt.Errorf("create %s %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), err)
			}
		}
	}
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return nil, err
	}
	// A bound token, as the kubelet would project into the Pod.
	tr, err := cs.CoreV1().ServiceAccounts(OperatorNamespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](7 * 24 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request a token for %s: %w", name, err)
	}
	return &rest.Config{
		Host:            e.Config.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.Config.CAData},
		BearerToken:     tr.Status.Token,
		QPS:             e.Config.QPS,
		Burst:           e.Config.Burst,
	}, nil
}

// WriteTokenKubeconfig writes a kubeconfig that reaches cfg's API server
// with cfg's bearer token (for example the manager's, from ManagerConfig),
// atomically: a reader sees the whole file or none.
func WriteTokenKubeconfig(path string, cfg *rest.Config, user string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["itmanager"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["itmanager"] = &clientcmdapi.Context{Cluster: "itmanager", AuthInfo: user}
	kc.CurrentContext = "itmanager"
	return WriteKubeconfig(path, kc)
}

// WriteKubeconfig writes kc to path with mode 0600 through a rename.
func WriteKubeconfig(path string, kc *clientcmdapi.Config) error {
	tmp := path + ".tmp"
	if err := clientcmd.WriteToFile(*kc, tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1. They are free
// when returned; a listener started right after takes them.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
