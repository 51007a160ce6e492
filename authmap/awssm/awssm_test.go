package awssm

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/authmap/internal/fetchtest"
	"github.com/google/go-cmp/cmp"
)

// fakeSM speaks Secrets Manager's AWS JSON 1.1 protocol: POST / with
// Content-Type application/x-amz-json-1.1 and X-Amz-Target
// secretsmanager.<Operation>, a SigV4 Authorization header, errors as
// {"__type": "...", "Message": "..."} with status 400.
type fakeSM struct {
	mu       sync.Mutex
	secrets  map[string]smSecret
	denied   map[string]string // secret id -> error type for every operation
	describe bool              // DescribeSecret allowed
	targets  []string
	regions  []string
}

type smSecret struct {
	value      string
	version    string
	rotation   bool
	nextRotate time.Time
	stages     map[string][]string
}

func (f *fakeSM) fail(w http.ResponseWriter, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", "4d8e2c1a-0000-4000-8000-000000000000")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": typ, "Message": msg})
}

func (f *fakeSM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	target := r.Header.Get("X-Amz-Target")
	f.targets = append(f.targets, target)
	auth := r.Header.Get("Authorization")
	if r.Method != http.MethodPost || r.URL.Path != "/" || r.Header.Get("Content-Type") != "application/x-amz-json-1.1" ||
		!strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential=AKIDTEST/") || !strings.Contains(auth, "/secretsmanager/aws4_request") {
		f.fail(w, "IncompleteSignature", "bad request shape: "+r.Method+" "+r.URL.Path)
		return
	}
	// Credential=AKIDTEST/<date>/<region>/secretsmanager/aws4_request
	if parts := strings.Split(strings.TrimPrefix(strings.Fields(auth)[1], "Credential="), "/"); len(parts) > 2 {
		f.regions = append(f.regions, parts[2])
	}
	body, _ := io.ReadAll(r.Body)
	var in struct{ SecretId string }
	if err := json.Unmarshal(body, &in); err != nil {
		f.fail(w, "SerializationException", "bad JSON")
		return
	}
	if typ, ok := f.denied[in.SecretId]; ok {
		f.fail(w, typ, "User: arn:aws:iam::123456789012:user/gw is not authorized to perform: secretsmanager:GetSecretValue")
		return
	}
	sec, ok := f.secrets[in.SecretId]
	if !ok {
		f.fail(w, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
		return
	}
	arn := "arn:aws:secretsmanager:eu-west-1:123456789012:secret:" + in.SecretId + "-AbCdEf"
	var out map[string]any
	switch target {
	case "secretsmanager.GetSecretValue":
		out = map[string]any{"ARN": arn, "Name": in.SecretId, "VersionId": sec.version, "SecretString": sec.value,
			"VersionStages": []string{"AWSCURRENT"}, "CreatedDate": 1.7e9}
	case "secretsmanager.DescribeSecret":
		if !f.describe {
			f.fail(w, "AccessDeniedException", "not authorized to perform: secretsmanager:DescribeSecret")
			return
		}
		out = map[string]any{"ARN": arn, "Name": in.SecretId, "RotationEnabled": sec.rotation, "VersionIdsToStages": sec.stages}
		if !sec.nextRotate.IsZero() {
			out["NextRotationDate"] = float64(sec.nextRotate.Unix())
		}
	default:
		f.fail(w, "UnknownOperationException", target)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(out)
}

func newFake(t *testing.T) (*fakeSM, *httptest.Server) {
	next := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	f := &fakeSM{describe: true, secrets: map[string]smSecret{
		"prod/plain": {value: "sk-plainSecretValue0123456789", version: "v-1111",
			stages: map[string][]string{"v-1111": {"AWSCURRENT"}}},
		"prod/json": {value: `{"username":"svc","token":"tok-from-json-field"}`, version: "v-2222",
			rotation: true, nextRotate: next,
			stages: map[string][]string{"v-2222": {"AWSCURRENT"}, "v-1110": {"AWSPREVIOUS"}}},
		"prod/rotating": {value: "new-or-old", version: "v-3333", rotation: true, nextRotate: next,
			stages: map[string][]string{"v-3333": {"AWSCURRENT"}, "v-3334": {"AWSPENDING"}}},
		"prod/empty": {value: "  ", version: "v-4444"},
	}, denied: map[string]string{"prod/forbidden": "AccessDeniedException", "prod/kms": "DecryptionFailure"}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func testOptions(endpoint string) *Options {
	return &Options{
		Endpoint:          endpoint,
		Credentials:       &StaticCredentials{AccessKeyID: "AKIDTEST", SecretAccessKey: "not-a-real-secret"},
		MaxAttempts:       1,
		SharedConfigFiles: []string{},
	}
}

// Regression test for issue 7 (AWS Secrets Manager source): GetSecretValue
// and DescribeSecret through aws-sdk-go-v2 against a server speaking the
// documented JSON 1.1 protocol, rotation metadata included.
func TestSecretsManagerSource(t *testing.T) {
	t.Parallel()
	_, srv := newFake(t)
	next := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		cfg     authmap.AWSSecretsManagerConfig
		want    authmap.Token
		wantErr error
		errText string
	}{
		{name: "whole secret string", cfg: authmap.AWSSecretsManagerConfig{SecretID: "prod/plain"},
			want: authmap.Token{Value: "sk-plainSecretValue0123456789", Version: "v-1111"}},
		{name: "field, rotation date", cfg: authmap.AWSSecretsManagerConfig{SecretID: "prod/json", Field: "token"},
			want: authmap.Token{Value: "tok-from-json-field", Version: "v-2222", RotationAt: next}},
		{name: "AWSPENDING", cfg: authmap.AWSSecretsManagerConfig{SecretID: "prod/rotating"},
			want: authmap.Token{Value: "new-or-old", Version: "v-3333", RotationAt: next, RotationPending: true}},
		{name: "not found", cfg: authmap.AWSSecretsManagerConfig{SecretID: "prod/nope"},
			wantErr: authmap.ErrMissing, errText: "GetSecretValue: ResourceNotFoundException: Secrets Manager can't find the specified secret."},
		{name: "access denied", cfg: authmap.AWSSecretsManagerConfig{SecretID: "prod/forbidden"},
			wantErr: authmap.ErrDenied, errText: "AccessDeniedException"},
		{name: "kms denied", cfg: authmap.AWSSecretsManagerConfig{SecretID: "prod/kms"},
			wantErr: authmap.ErrDenied, errText: "DecryptionFailure"},
		{name: "empty", cfg: authmap.AWSSecretsManagerConfig{SecretID: "prod/empty"}, wantErr: authmap.ErrMissing},
		{name: "no such field", cfg: authmap.AWSSecretsManagerConfig{SecretID: "prod/json", Field: "password"},
			wantErr: authmap.ErrMissing, errText: `no field "password"`},
		{name: "field of a plain string", cfg: authmap.AWSSecretsManagerConfig{SecretID: "prod/plain", Field: "token"},
			errText: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			tt.cfg.Region = "eu-west-1"
			src, err := New("credentials.a.source.aws_secrets_manager", tt.cfg, testOptions(srv.URL))
			if err != nil {
				t.Fatal(err)
			}
			got, err := src.Fetch(ctx)
			fetchtest.Check(t, got, err, tt.want, tt.wantErr, tt.errText)
		})
	}
}

// Without DescribeSecret permission the value still loads; the rotation metadata stays unknown.
func TestSecretsManagerDescribeDenied(t *testing.T) {
	t.Parallel()
	f, srv := newFake(t)
	f.describe = false
	src, err := New("k", authmap.AWSSecretsManagerConfig{SecretID: "prod/json", Field: "token", Region: "eu-west-1"}, testOptions(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	got, err := src.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(authmap.Token{Value: "tok-from-json-field", Version: "v-2222"}, got); diff != "" {
		t.Errorf("token mismatch (-want +got):\n%s", diff)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if diff := cmp.Diff([]string{"secretsmanager.GetSecretValue", "secretsmanager.DescribeSecret"}, f.targets); diff != "" {
		t.Errorf("operations mismatch (-want +got):\n%s", diff)
	}
}

// An ARN secret_id without a region signs for the ARN's region.
func TestSecretsManagerRegionFromARN(t *testing.T) {
	t.Parallel()
	f, srv := newFake(t)
	f.secrets["arn:aws:secretsmanager:ap-south-2:123456789012:secret:prod/x"] = smSecret{value: "arn-value", version: "v-9"}
	src, err := New("k", authmap.AWSSecretsManagerConfig{SecretID: "arn:aws:secretsmanager:ap-south-2:123456789012:secret:prod/x"}, testOptions(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.regions) == 0 || f.regions[0] != "ap-south-2" {
		t.Errorf("signed for regions %v, want ap-south-2", f.regions)
	}
}
