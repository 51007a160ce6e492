// Package fetchtest holds the checks that the tests of authmap's secret
// sources (awssm, vault, oauth2src) share. Only tests import it.
package fetchtest

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/credgate/credgate/authmap"
)

// Check reports on t whether a source's Fetch, which returned got and err,
// did what a test case wants: no error and want, when wantErr is nil and
// errText empty; otherwise what CheckErr wants.
func Check(t testing.TB, got authmap.Token, err error, want authmap.Token, wantErr error, errText string, secrets ...string) {
	t.Helper()
	if wantErr == nil && errText == "" {
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("token mismatch (-want +got):\n%s", diff)
		}
		return
	}
	if err == nil {
		t.Fatalf("Fetch = %+v, want an error", got)
	}
	CheckErr(t, err, wantErr, errText, secrets...)
}

// CheckErr reports on t whether err, from a source's Fetch, is wantErr (when
// not nil) and contains errText, and whether it shows any of secrets.
func CheckErr(t testing.TB, err, wantErr error, errText string, secrets ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if wantErr != nil && !errors.Is(err, wantErr) {
		t.Errorf("error %q is not %v", err, wantErr)
	}
	if !strings.Contains(err.Error(), errText) {
		t.Errorf("error %q does not contain %q", err, errText)
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q shows the secret %q", err, s)
		}
	}
}
