// Package deploy holds credgate's Kubernetes manifests (kustomize); this
// test renders them with the kustomize library, decodes every object
// strictly into the k8s.io/api types (an unknown or misspelt field fails),
// and checks that the probes, ports, mounts and timings match what the
// gateway binary serves and reads.
package deploy

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/gateway"
)

// rendered is the kustomization's output, decoded.
type rendered struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	pdbs        map[string]*policyv1.PodDisruptionBudget
	namespaces  map[string]*corev1.Namespace
}

func render(t *testing.T) *rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), ".")
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	r := &rendered{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, namespaces: map[string]*corev1.Namespace{}}
	for _, res := range m.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		js, err := yaml.YAMLToJSON(y)
		if err != nil {
			t.Fatalf("%s %s: %v", res.GetKind(), res.GetName(), err)
		}
		strict := func(into any) {
			d := json.NewDecoder(bytes.NewReader(js))
			d.DisallowUnknownFields()
			if err := d.Decode(into); err != nil {
				t.Errorf("%s %s does not decode strictly into %T: %v", res.GetKind(), res.GetName(), into, err)
			}
		}
		name := res.GetName()
		switch res.GetKind() {
		case "Deployment":
			o := &appsv1.Deployment{}
			strict(o)
			r.deployments[name] = o
		case "Service":
			o := &corev1.Service{}
			strict(o)
			r.services[name] = o
		case "ConfigMap":
			o := &corev1.ConfigMap{}
			strict(o)
			r.configMaps[name] = o
		case "Secret":
			o := &corev1.Secret{}
			strict(o)
			r.secrets[name] = o
		case "PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			strict(o)
			r.pdbs[name] = o
		case "Namespace":
			o := &corev1.Namespace{}
			strict(o)
			r.namespaces[name] = o
		default:
			t.Errorf("unexpected kind %s (%s): add it to this test", res.GetKind(), name)
		}
		if ns := res.GetNamespace(); res.GetKind() != "Namespace" && ns != "credgate" {
			t.Errorf("%s %s in namespace %q, want credgate", res.GetKind(), name, ns)
		}
	}
	return r
}

func TestManifests(t *testing.T) {
	t.Parallel()
	r := render(t)
	d := r.deployments["credgate"]
	if d == nil {
		t.Fatal("no Deployment credgate")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", d.Spec.Replicas)
	}
	pod := d.Spec.Template
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// The config: the ConfigMap file the container's --config names, mounted
	// as a directory (a subPath mount never sees an update).
	configPath := argAfter(t, c.Args, "--config")
	mount := mountOf(t, c, configPath)
	if mount.SubPath != "" {
		t.Errorf("the config is mounted with subPath %q: Kubernetes never updates such a mount, so the config cannot be hot reloaded", mount.SubPath)
	}
	vol := volumeOf(t, pod.Spec, mount.Name)
	if vol.ConfigMap == nil {
		t.Fatalf("the config volume %q is not a ConfigMap", vol.Name)
	}
	cm := r.configMaps[vol.ConfigMap.Name]
	if cm == nil {
		t.Fatalf("ConfigMap %q is not in the kustomization", vol.ConfigMap.Name)
	}
	rel := strings.TrimPrefix(configPath, mount.MountPath+"/")
	data, ok := cm.Data[rel]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %q (the file --config names)", cm.Name, rel)
	}
	cfg, err := gateway.ParseConfig([]byte(data), nil)
	if err != nil {
		t.Fatalf("the ConfigMap's config is refused by the gateway:\n%v", err)
	}

	// Ports: the container serves the config's listen port.
	_, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen); host != "0.0.0.0" && host != "" {
		t.Errorf("listen %s: a pod must listen on every interface for its probes and Service", cfg.Listen)
	}
	http := containerPort(t, c, "http")
	if strconv.Itoa(int(http.ContainerPort)) != port {
		t.Errorf("containerPort %d, but the config listens on %s", http.ContainerPort, cfg.Listen)
	}

	// Probes: on the gateway's own endpoints, which a real handler serves.
	probes := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe}
	wantPath := map[string]string{"liveness": "/healthz", "readiness": "/readyz", "startup": "/healthz"}
	for kind, p := range probes {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: want an httpGet", kind)
			continue
		}
		if p.HTTPGet.Path != wantPath[kind] {
			t.Errorf("%s probe on %s, want %s", kind, p.HTTPGet.Path, wantPath[kind])
		}
		if !portMatches(p.HTTPGet.Port, http) {
			t.Errorf("%s probe on port %s, not the container's http port", kind, p.HTTPGet.Port.String())
		}
		checkServed(t, p.HTTPGet.Path)
	}
	ann := pod.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != port || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v, want scrape true on port %s, path /metrics", ann, port)
	}

	// Shutdown: the grace period covers preStop, shutdown_timeout and what
	// the gateway does after it.
	pre := c.Lifecycle.PreStop
	if pre == nil || pre.Sleep == nil {
		t.Fatal("preStop: want a sleep, so endpoints drop the pod before SIGTERM")
	}
	shutdown := cfg.ShutdownTimeout
	if shutdown == 0 {
		shutdown = gateway.DefaultShutdownTimeout
	}
	need := time.Duration(pre.Sleep.Seconds)*time.Second + shutdown + 2*time.Second + 5*time.Second
	if grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second; grace < need {
		t.Errorf("terminationGracePeriodSeconds %s < preStop %ds + shutdown_timeout %s + 7s the gateway needs after it", grace, pre.Sleep.Seconds, shutdown)
	}

	// Every file the config reads comes from a mounted Secret key (not a
	// subPath mount: those miss a rotated Secret).
	for key, file := range configFiles(cfg) {
		m := mountOf(t, c, file)
		if m.SubPath != "" {
			t.Errorf("%s: %s is mounted with subPath: a new Secret would never reach it", key, file)
		}
		v := volumeOf(t, pod.Spec, m.Name)
		if v.Secret == nil {
			t.Errorf("%s: %s is not on a Secret volume", key, file)
			continue
		}
		s := r.secrets[v.Secret.SecretName]
		if s == nil {
			t.Errorf("%s: Secret %q is not in the kustomization", key, v.Secret.SecretName)
			continue
		}
		item := strings.TrimPrefix(file, m.MountPath+"/")
		if _, ok := s.StringData[item]; !ok {
			if _, ok := s.Data[item]; !ok {
				t.Errorf("%s: Secret %s has no key %q", key, s.Name, item)
			}
		}
	}

	// Redis: the state URL names the Redis Service.
	if cfg.State.Redis == nil || cfg.State.Redis.EncryptionKey.IsZero() {
		t.Error("state.redis with an encryption_key: replicas share renewals only with one")
	} else {
		u, err := url.Parse(cfg.State.Redis.URL)
		if err != nil {
			t.Fatal(err)
		}
		svc := r.services[u.Hostname()]
		if svc == nil {
			t.Fatalf("state.redis.url names %s, which is not a Service here", u.Hostname())
		}
		if len(svc.Spec.Ports) != 1 || strconv.Itoa(int(svc.Spec.Ports[0].Port)) != u.Port() {
			t.Errorf("Redis Service ports %v, state.redis.url port %s", svc.Spec.Ports, u.Port())
		}
		rd := r.deployments[u.Hostname()]
		if rd == nil || !selects(svc.Spec.Selector, rd.Spec.Template.Labels) {
			t.Errorf("the Redis Service selects no Redis Deployment")
		} else if !portMatches(svc.Spec.Ports[0].TargetPort, containerPort(t, rd.Spec.Template.Spec.Containers[0], "redis")) {
			t.Errorf("the Redis Service's targetPort is not the container's")
		}
	}

	// The Service and the PodDisruptionBudget select the gateway's pods.
	svc := r.services["credgate"]
	if svc == nil || !selects(svc.Spec.Selector, pod.Labels) || !portMatches(svc.Spec.Ports[0].TargetPort, http) {
		t.Errorf("Service credgate does not reach the pods' http port")
	}
	pdb := r.pdbs["credgate"]
	if pdb == nil || pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, pod.Labels) {
		t.Fatalf("no PodDisruptionBudget selecting the gateway's pods")
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 || pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
		t.Errorf("PodDisruptionBudget minAvailable %v: want at least 1 and fewer than the replicas", pdb.Spec.MinAvailable)
	}
}

// checkServed asks a real gateway handler for path: it must exist (any
// status but 404; /readyz answers 503 on a gateway that has not started).
func checkServed(t *testing.T, p string) {
	t.Helper()
	cfg := &gateway.Config{}
	cfg.Normalize()
	g, err := gateway.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	rec := httptest.NewRecorder()
	g.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
	if rec.Code == http.StatusNotFound {
		t.Errorf("the gateway does not serve %s", p)
	}
}

// configFiles lists the files the config reads, by key.
func configFiles(cfg *gateway.Config) map[string]string {
	out := map[string]string{}
	add := func(key string, ref authmap.SourceConfig) {
		if ref.File != "" {
			out[key] = ref.File
		}
	}
	for name, c := range cfg.Credentials {
		add("credentials."+name+".source", c.Source)
	}
	add("admin.token", authmap.SourceConfig(cfg.Admin.Token))
	add("webhooks.secret", authmap.SourceConfig(cfg.Webhooks.Secret))
	if cfg.State.Redis != nil {
		add("state.redis.encryption_key", authmap.SourceConfig(cfg.State.Redis.EncryptionKey))
	}
	return out
}

func argAfter(t *testing.T, args []string, flag string) string {
	t.Helper()
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatalf("args %v have no %s", args, flag)
	return ""
}

// mountOf returns the container's mount holding file.
func mountOf(t *testing.T, c corev1.Container, file string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(file, m.MountPath+"/") && path.Dir(strings.TrimPrefix(file, m.MountPath+"/")) == "." {
			return m
		}
	}
	t.Fatalf("no volume mount holds %s", file)
	return corev1.VolumeMount{}
}

func volumeOf(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

func containerPort(t *testing.T, c corev1.Container, name string) corev1.ContainerPort {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, name)
	return corev1.ContainerPort{}
}

func portMatches(p intstr.IntOrString, cp corev1.ContainerPort) bool {
	if p.Type == intstr.String {
		return p.StrVal == cp.Name
	}
	return p.IntVal == cp.ContainerPort
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
