// Package awssm is the credential source that reads an AWS Secrets Manager
// secret (config key credentials.<name>.source.aws_secrets_manager) through
// aws-sdk-go-v2 with the default credential chain. GetSecretValue gives the
// value (the secret string, or one field of it as JSON) and its VersionId;
// DescribeSecret gives the rotation metadata: NextRotationDate (the token's
// RotationAt, when rotation is enabled) and whether a version is staged
// AWSPENDING (a rotation under way).
//
// Errors wrap authmap's sentinels: ResourceNotFoundException and a secret
// marked for deletion are [authmap.ErrMissing]; AccessDeniedException and the
// other refusals of the caller's AWS identity are [authmap.ErrDenied];
// anything else is transient.
package awssm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"
	"github.com/credgate/credgate/authmap"
)

// Options configure a Source. A nil *Options is the same as the zero value.
type Options struct {
	// Endpoint overrides the Secrets Manager endpoint (a VPC endpoint,
	// LocalStack, a test server). If empty, the SDK resolves it (it also
	// honours AWS_ENDPOINT_URL_SECRETS_MANAGER).
	Endpoint string
	// Credentials, if set, are used instead of the default credential chain.
	Credentials *StaticCredentials
	// HTTPClient sends the requests. If nil, the SDK's default.
	HTTPClient *http.Client
	// MaxAttempts bounds the SDK's attempts per request. If zero, the SDK's
	// default (3).
	MaxAttempts int
	// SharedConfigFiles, if non-nil, replaces the shared config and
	// credentials files the SDK reads (~/.aws/config, ~/.aws/credentials);
	// an empty slice reads none.
	SharedConfigFiles []string
}

// StaticCredentials are a fixed AWS access key.
type StaticCredentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

// Source reads one secret.
type Source struct {
	cfg  authmap.AWSSecretsManagerConfig
	opts Options

	mu     sync.Mutex
	client *secretsmanager.Client // built at the first fetch: loading the AWS config may read files
}

// Open is the [authmap.OpenFunc] of aws_secrets_manager sources.
func Open(key string, cfg authmap.SourceConfig, opts *authmap.SourceOptions) (authmap.Source, error) {
	if cfg.AWSSecretsManager == nil {
		return nil, fmt.Errorf("%s.aws_secrets_manager: not set", key)
	}
	var o Options
	if opts != nil {
		o.HTTPClient = opts.HTTPClient
	}
	return New(key+".aws_secrets_manager", *cfg.AWSSecretsManager, &o)
}

// New returns the source cfg describes; key is its config path for errors.
// It does no I/O.
func New(key string, cfg authmap.AWSSecretsManagerConfig, opts *Options) (*Source, error) {
	if cfg.SecretID == "" {
		return nil, fmt.Errorf("%s.secret_id: required", key)
	}
	s := &Source{cfg: cfg}
	if opts != nil {
		s.opts = *opts
	}
	if s.cfg.Region == "" {
		if a, err := arn.Parse(cfg.SecretID); err == nil {
			s.cfg.Region = a.Region
		}
	}
	return s, nil
}

// Kind returns "aws_secrets_manager".
func (s *Source) Kind() string { return authmap.KindAWSSecretsManager }

func (s *Source) clientFor(ctx context.Context) (*secretsmanager.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	var lo []func(*config.LoadOptions) error
	if s.cfg.Region != "" {
		lo = append(lo, config.WithRegion(s.cfg.Region))
	}
	if c := s.opts.Credentials; c != nil {
		lo = append(lo, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)))
	}
	if s.opts.HTTPClient != nil {
		lo = append(lo, config.WithHTTPClient(s.opts.HTTPClient))
	}
	if s.opts.MaxAttempts > 0 {
		lo = append(lo, config.WithRetryMaxAttempts(s.opts.MaxAttempts))
	}
	if s.opts.SharedConfigFiles != nil {
		lo = append(lo, config.WithSharedConfigFiles(s.opts.SharedConfigFiles), config.WithSharedCredentialsFiles(s.opts.SharedConfigFiles))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("aws_secrets_manager %s: loading the AWS config: %w", s.cfg.SecretID, err)
	}
	s.client = secretsmanager.NewFromConfig(awsCfg, func(o *secretsmanager.Options) {
		if s.opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(s.opts.Endpoint)
		}
	})
	return s.client, nil
}

// Fetch reads the secret's current version (AWSCURRENT) and its rotation
// metadata. A DescribeSecret that fails (a policy allowing only
// GetSecretValue) leaves the metadata unknown rather than failing the fetch.
func (s *Source) Fetch(ctx context.Context) (authmap.Token, error) {
	client, err := s.clientFor(ctx)
	if err != nil {
		return authmap.Token{}, err
	}
	id := aws.String(s.cfg.SecretID)
	out, err := client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: id})
	if err != nil {
		return authmap.Token{}, s.mapError("GetSecretValue", err)
	}
	var raw string
	switch {
	case out.SecretString != nil:
		raw = *out.SecretString
	case out.SecretBinary != nil && utf8.Valid(out.SecretBinary):
		raw = string(out.SecretBinary)
	case out.SecretBinary != nil:
		return authmap.Token{}, fmt.Errorf("aws_secrets_manager %s: the secret is binary, not text", s.cfg.SecretID)
	}
	value, err := s.field(raw)
	if err != nil {
		return authmap.Token{}, err
	}
	tok := authmap.Token{Value: value, Version: aws.ToString(out.VersionId)}
	if d, err := client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: id}); err == nil {
		if aws.ToBool(d.RotationEnabled) && d.NextRotationDate != nil {
			tok.RotationAt = *d.NextRotationDate
		}
		for _, stages := range d.VersionIdsToStages {
			for _, st := range stages {
				if st == "AWSPENDING" {
					tok.RotationPending = true
				}
			}
		}
	}
	return tok, nil
}

func (s *Source) field(raw string) (string, error) {
	if s.cfg.Field == "" {
		if v := strings.TrimSpace(raw); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("aws_secrets_manager %s: the secret string is empty: %w", s.cfg.SecretID, authmap.ErrMissing)
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(raw), &obj); err != nil {
		return "", fmt.Errorf("aws_secrets_manager %s: field %q: the secret string is not a JSON object", s.cfg.SecretID, s.cfg.Field)
	}
	v, ok := obj[s.cfg.Field].(string)
	if !ok {
		if _, present := obj[s.cfg.Field]; present && obj[s.cfg.Field] != nil {
			return "", fmt.Errorf("aws_secrets_manager %s: field %q is not a string", s.cfg.SecretID, s.cfg.Field)
		}
		return "", fmt.Errorf("aws_secrets_manager %s: no field %q: %w", s.cfg.SecretID, s.cfg.Field, authmap.ErrMissing)
	}
	if v = strings.TrimSpace(v); v == "" {
		return "", fmt.Errorf("aws_secrets_manager %s: field %q is empty: %w", s.cfg.SecretID, s.cfg.Field, authmap.ErrMissing)
	}
	return v, nil
}

// deniedCodes are the error codes that refuse the caller's AWS identity.
var deniedCodes = map[string]bool{
	"AccessDeniedException": true, "UnrecognizedClientException": true, "InvalidSignatureException": true,
	"IncompleteSignature": true, "ExpiredTokenException": true, "InvalidClientTokenId": true,
	"MissingAuthenticationToken": true, "NotAuthorized": true,
	// KMS refused to decrypt the secret for this identity.
	"DecryptionFailure": true,
}

func (s *Source) mapError(op string, err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code, msg := ae.ErrorCode(), ae.ErrorMessage()
		e := fmt.Errorf("aws_secrets_manager %s: %s: %s: %s", s.cfg.SecretID, op, code, msg)
		switch {
		case code == "ResourceNotFoundException":
			return fmt.Errorf("%w: %w", e, authmap.ErrMissing)
		case code == "InvalidRequestException" && strings.Contains(strings.ToLower(msg), "deletion"):
			return fmt.Errorf("%w: %w", e, authmap.ErrMissing)
		case deniedCodes[code]:
			return fmt.Errorf("%w: %w", e, authmap.ErrDenied)
		}
		return e
	}
	return fmt.Errorf("aws_secrets_manager %s: %s: %w", s.cfg.SecretID, op, err)
}
