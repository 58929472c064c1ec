package testenv

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
)

// PushOption adjusts PushImage.
type PushOption func(*pushOptions)

type pushOptions struct {
	auth   *types.DockerAuthConfig
	report io.Writer
}

// WithCredentials authenticates the push (for a registry started with
// RegistryConfig.Htpasswd).
func WithCredentials(username, password string) PushOption {
	return func(o *pushOptions) {
		o.auth = &types.DockerAuthConfig{Username: username, Password: password}
	}
}

// WithProgress sends containers/image's copy progress to w (default: discarded).
func WithProgress(w io.Writer) PushOption {
	return func(o *pushOptions) { o.report = w }
}

// PushImage copies the image tagged tag in the OCI layout layoutDir to dest
// ("127.0.0.1:5000/openruntimes/test:v5-1", with or without "docker://").
// insecure allows plain HTTP and unverified TLS, which the local registry needs.
func PushImage(ctx context.Context, layoutDir, tag, dest string, insecure bool, opts ...PushOption) error {
	o := pushOptions{report: io.Discard}
	for _, opt := range opts {
		opt(&o)
	}

	srcRef, err := layout.NewReference(layoutDir, tag)
	if err != nil {
		return fmt.Errorf("source oci:%s:%s: %w", layoutDir, tag, err)
	}
	destRef, err := docker.ParseReference("//" + strings.TrimPrefix(dest, "docker://"))
	if err != nil {
		return fmt.Errorf("destination %s: %w", dest, err)
	}

	// Built in code rather than read from /etc/containers/policy.json: the
	// test images are unsigned and hosts may have no (or a strict) policy.
	policy := &signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}}
	policyCtx, err := signature.NewPolicyContext(policy)
	if err != nil {
		return fmt.Errorf("signature policy: %w", err)
	}
	defer func() { _ = policyCtx.Destroy() }()

	// Keep containers/image away from host state (registries.conf, auth
	// files, the blob-info cache under /var/lib/containers): a push must not
	// depend on, or leave anything in, the machine it runs on.
	scratch, err := os.MkdirTemp("", "testenv-push-*")
	if err != nil {
		return fmt.Errorf("create scratch dir: %w", err)
	}
	defer os.RemoveAll(scratch)
	// An explicit SystemRegistriesConfPath must exist; an empty file means
	// "no mirrors, no insecure registries beyond DockerInsecureSkipTLSVerify".
	if err := os.WriteFile(filepath.Join(scratch, "registries.conf"), nil, 0o644); err != nil {
		return fmt.Errorf("write empty registries.conf: %w", err)
	}
	sys := isolatedSystemContext(scratch)
	sys.DockerInsecureSkipTLSVerify = types.NewOptionalBool(insecure)
	sys.DockerAuthConfig = o.auth

	if _, err := copy.Image(ctx, policyCtx, destRef, srcRef, &copy.Options{
		ReportWriter:   o.report,
		SourceCtx:      isolatedSystemContext(scratch),
		DestinationCtx: sys,
	}); err != nil {
		return fmt.Errorf("push oci:%s:%s to docker://%s: %w", layoutDir, tag, dest, err)
	}
	return nil
}

// isolatedSystemContext points every host-wide containers/image setting at
// (mostly absent) files under dir.
func isolatedSystemContext(dir string) *types.SystemContext {
	return &types.SystemContext{
		SystemRegistriesConfPath:    filepath.Join(dir, "registries.conf"),
		SystemRegistriesConfDirPath: filepath.Join(dir, "registries.conf.d"),
		RegistriesDirPath:           filepath.Join(dir, "registries.d"),
		AuthFilePath:                filepath.Join(dir, "auth.json"),
		BlobInfoCacheDir:            filepath.Join(dir, "cache"),
		DockerPerHostCertDirPath:    filepath.Join(dir, "certs.d"),
	}
}
