// Package deploy holds credgate's Kubernetes manifests (kustomize); this
// test renders them with the kustomize library, decodes every object
// strictly into the k8s.io/api types (an unknown or misspelt field fails),
// and checks that the probes, ports, mounts and timings match what the
// gateway binary serves and reads.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	netHTTP "net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
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
	netpols     map[string]*networkingv1.NetworkPolicy
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
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, namespaces: map[string]*corev1.Namespace{},
		netpols: map[string]*networkingv1.NetworkPolicy{}}
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
		case "NetworkPolicy":
			o := &networkingv1.NetworkPolicy{}
			strict(o)
			r.netpols[name] = o
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
	// What serve checks before it starts (and validate with it): a pod
	// listens on every interface, where agents must authenticate.
	if err := cfg.CheckExposure(cfg.Listen); err != nil {
		t.Errorf("gateway serve refuses the ConfigMap's config (every pod would crash-loop):\n%v", err)
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
	if cfg.Admin.Listen != "" {
		_, adminPort, err := net.SplitHostPort(cfg.Admin.Listen)
		if err != nil {
			t.Fatal(err)
		}
		if host, _, _ := net.SplitHostPort(cfg.Admin.Listen); host != "0.0.0.0" && host != "" {
			t.Errorf("admin.listen %s: the kubelet's probes and Prometheus reach the pod's IP", cfg.Admin.Listen)
		}
		if a := containerPort(t, c, "admin"); strconv.Itoa(int(a.ContainerPort)) != adminPort {
			t.Errorf("containerPort admin %d, but admin.listen is %s", a.ContainerPort, cfg.Admin.Listen)
		}
	}

	// A gateway serving the ConfigMap's very config, with the Secret's files:
	// the probes, the scrape and the agents' requests are asked of it as the
	// kubelet, Prometheus and an agent would.
	gw := serveManifestConfig(t, data, r.secrets, c, configFiles(cfg))
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
		// Any status but 404: /readyz answers 503 on a gateway whose
		// upstreams were never tried.
		if code := gw.get(t, c, p.HTTPGet.Port, p.HTTPGet.Path, ""); code == netHTTP.StatusNotFound || code == 0 {
			t.Errorf("%s probe: GET %s on port %s answered %d", kind, p.HTTPGet.Path, p.HTTPGet.Port.String(), code)
		}
	}
	// Prometheus' annotation convention sends no credentials: /metrics must
	// answer 200 on the annotated port without a token (with admin.token
	// and no admin.listen, it answered 401 and the scrape failed).
	ann := pod.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v, want scrape true, path /metrics", ann)
	}
	if n, err := strconv.Atoi(ann["prometheus.io/port"]); err != nil {
		t.Errorf("prometheus.io/port %q: %v", ann["prometheus.io/port"], err)
	} else if code := gw.get(t, c, intstr.FromInt32(int32(n)), ann["prometheus.io/path"], ""); code != netHTTP.StatusOK {
		t.Errorf("the scrape (GET %s on port %d, no token) answered %d, want 200", ann["prometheus.io/path"], n, code)
	}
	// The other ops endpoints on that port need admin.token: anyone in the
	// cluster may reach the port when no network plugin enforces the
	// NetworkPolicy, and POST /admin/* re-reads config and credentials.
	token := gw.values["admin.token"]
	if token == "" {
		t.Error("admin.token is unset (or not read from the Secret): the ops port's /health, /events and /admin/* answer anyone")
	}
	for _, path := range []string{"/health", "/events", "/status", "/admin/events"} {
		if code := gw.get(t, c, intstr.FromString("admin"), path, ""); code != netHTTP.StatusUnauthorized {
			t.Errorf("GET %s on the admin port without a token answered %d, want 401", path, code)
		}
	}
	if code := gw.get(t, c, intstr.FromString("admin"), "/health", "", token); code != netHTTP.StatusOK && code != netHTTP.StatusServiceUnavailable {
		t.Errorf("GET /health on the admin port with the Secret's admin-token answered %d, want 200 or 503", code)
	}
	// Agents come through the Service by its name: the Host is accepted and
	// the agent must authenticate (401, not the Host guard's 403).
	if code := gw.get(t, c, intstr.FromString("http"), "/mcp", "credgate.credgate.svc.cluster.local"); code != netHTTP.StatusUnauthorized {
		t.Errorf("GET /mcp without a key, by the Service's name, answered %d, want 401 (403: the Host is refused)", code)
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
	// The NetworkPolicy, if any, lets agents reach the http port from
	// anywhere and the admin port from somewhere (Prometheus).
	for name, np := range r.netpols {
		if !selects(np.Spec.PodSelector.MatchLabels, pod.Labels) {
			continue
		}
		open, admin := false, false
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port == nil {
					continue
				}
				if portMatches(*p.Port, http) && len(rule.From) == 0 {
					open = true
				}
				if cfg.Admin.Listen != "" && portMatches(*p.Port, containerPort(t, c, "admin")) {
					admin = true
				}
			}
		}
		if !open {
			t.Errorf("NetworkPolicy %s does not let agents reach the http port", name)
		}
		if cfg.Admin.Listen != "" && !admin {
			t.Errorf("NetworkPolicy %s lets nobody reach the admin port: Prometheus cannot scrape", name)
		}
	}
	pdb := r.pdbs["credgate"]
	if pdb == nil || pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, pod.Labels) {
		t.Fatalf("no PodDisruptionBudget selecting the gateway's pods")
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 || pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
		t.Errorf("PodDisruptionBudget minAvailable %v: want at least 1 and fewer than the replicas", pdb.Spec.MinAvailable)
	}
}

// servedGateway is a gateway serving a manifest's config on loopback.
type servedGateway struct {
	listen, admin         string            // bound addresses: listen, admin.listen ("" if unset)
	listenPort, adminPort string            // the ports the config names
	values                map[string]string // the Secret's value of each file the config reads, by key
}

// serveManifestConfig starts a gateway (never its upstreams) on the
// ConfigMap's config text, with every file it reads written from the
// Secret it is mounted from, listen and admin.listen bound on loopback.
func serveManifestConfig(t *testing.T, data string, secrets map[string]*corev1.Secret, c corev1.Container, files map[string]string) *servedGateway {
	t.Helper()
	dir := t.TempDir()
	values := map[string]string{}
	for key, file := range files {
		var value string
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(file, m.MountPath+"/") {
				for _, s := range secrets {
					item := strings.TrimPrefix(file, m.MountPath+"/")
					if v, ok := s.StringData[item]; ok {
						value = v
					} else if v, ok := s.Data[item]; ok {
						value = string(v)
					}
				}
			}
		}
		if value == "" {
			t.Fatalf("%s: no Secret holds %s", key, file)
		}
		values[key] = value
		local := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(file, "/"), "/", "_"))
		if err := os.WriteFile(local, []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
		data = strings.ReplaceAll(data, file, local)
	}
	cfg, err := gateway.ParseConfig([]byte(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	sg := &servedGateway{values: values}
	_, sg.listenPort, _ = net.SplitHostPort(cfg.Listen)
	if cfg.Admin.Listen != "" {
		_, sg.adminPort, _ = net.SplitHostPort(cfg.Admin.Listen)
		cfg.Admin.Listen = "127.0.0.1:0"
	}
	g, err := gateway.New(cfg, nil)
	if err != nil {
		t.Fatalf("gateway.New on the ConfigMap's config with the Secret's files: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sg.listen = l.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		g.Close()
	})
	// Serve binds admin.listen before it accepts on l: once l answers, the
	// ops address is known.
	resp, err := netHTTP.Get("http://" + sg.listen + "/healthz")
	if err != nil {
		t.Fatalf("the gateway does not serve: %v", err)
	}
	resp.Body.Close()
	sg.admin = g.OpsAddr()
	return sg
}

// get asks the gateway for path on the container port p names, with host
// as Host if set and bearer as a bearer token if given (no credentials
// otherwise); it returns the status, or 0 when the port is neither
// listen's nor admin.listen's.
func (sg *servedGateway) get(t *testing.T, c corev1.Container, p intstr.IntOrString, path, host string, bearer ...string) int {
	t.Helper()
	n := p.IntVal
	if p.Type == intstr.String {
		n = containerPort(t, c, p.StrVal).ContainerPort
	}
	var addr string
	switch strconv.Itoa(int(n)) {
	case sg.listenPort:
		addr = sg.listen
	case sg.adminPort:
		addr = sg.admin
	default:
		t.Errorf("port %s is neither listen's (%s) nor admin.listen's (%s)", p.String(), sg.listenPort, sg.adminPort)
		return 0
	}
	req, err := netHTTP.NewRequest(netHTTP.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for _, b := range bearer {
		req.Header.Set("Authorization", "Bearer "+b)
	}
	resp, err := netHTTP.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("GET %s on port %s: %v", path, p.String(), err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
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
	for i, k := range cfg.Auth.Keys {
		add(fmt.Sprintf("auth.keys[%d].key", i), authmap.SourceConfig(k.Key))
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
