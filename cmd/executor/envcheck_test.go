package main

import (
	"slices"
	"testing"
)

func TestUnknownSettings(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []string
	}{
		{"empty", nil, nil},
		{"only known settings", []string{
			"OPR_EXECUTOR_SECRET=x", "OPR_EXECUTOR_NETWORK=a,b", "OPR_EXECUTOR_SUBNET=10.1.0.0/16", "OPR_EXECUTOR_LOG_LEVEL=",
		}, nil},
		{"fallbacks the table reads", []string{
			"OPR_EXECUTOR_INACTIVE_TRESHOLD=60", // the seed's spelling
		}, nil},
		{"seed-era storage variables", []string{
			"OPR_EXECUTOR_STORAGE_DEVICE=s3", "OPR_EXECUTOR_STORAGE_S3_ACCESS_KEY=k", "OPR_EXECUTOR_STORAGE_S3_SECRET=s",
			"OPR_EXECUTOR_STORAGE_S3_REGION=r", "OPR_EXECUTOR_STORAGE_S3_BUCKET=b", "OPR_EXECUTOR_STORAGE_S3_ENDPOINT=e",
			"OPR_EXECUTOR_STORAGE_S3_HOST=h", "OPR_EXECUTOR_STORAGE_DO_SPACES_BUCKET=b", "OPR_EXECUTOR_STORAGE_BACKBLAZE_REGION=r",
			"OPR_EXECUTOR_STORAGE_LINODE_SECRET=s", "OPR_EXECUTOR_STORAGE_WASABI_ACCESS_KEY=k", "OPR_EXECUTOR_STORAGE_ROOTS=/srv",
			"OPR_EXECUTOR_CONNECTION_STORAGE=", "OPR_EXECUTOR_CONNECTION_BUILD_CACHE_STORAGE=",
		}, nil},
		{"a typo among known ones", []string{
			"OPR_EXECUTOR_SECRET=x", "OPR_EXECUTOR_NETWORK_SUBNET=10.1.0.0/16", "OPR_EXECUTOR_LISTEN=:1",
		}, []string{"OPR_EXECUTOR_NETWORK_SUBNET"}},
		{"sorted, once each, empty values too", []string{
			"OPR_EXECUTOR_FOO=1", "OPR_EXECUTOR_BAR=", "OPR_EXECUTOR_FOO=2", "OPR_EXECUTOR_STORAGE_GCS_BUCKET=b",
		}, []string{"OPR_EXECUTOR_BAR", "OPR_EXECUTOR_FOO", "OPR_EXECUTOR_STORAGE_GCS_BUCKET"}},
		{"other variables are not ours to judge", []string{
			"PATH=/bin", "REGISTRY_AUTH_FILE=/a.json", "CONTAINERS_REGISTRIES_CONF=/r.conf", "opr_executor_secret=x", "OPR_EXECUTORX=1",
		}, nil},
		{"the bare prefix and a name without a value", []string{"OPR_EXECUTOR_=1", "OPR_EXECUTOR_TYPO"},
			[]string{"OPR_EXECUTOR_", "OPR_EXECUTOR_TYPO"}},
		{"case matters: settings are upper case", []string{"OPR_EXECUTOR_Secret=x"}, []string{"OPR_EXECUTOR_Secret"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := unknownSettings(tc.environ); !slices.Equal(got, tc.want) {
				t.Errorf("unknownSettings(%q) = %q, want %q", tc.environ, got, tc.want)
			}
		})
	}
}

// Every name of the settings table must count as known, or a correct
// configuration would be warned about.
func TestUnknownSettingsKnowsTheTable(t *testing.T) {
	var environ []string
	for _, s := range (&config{}).settings(func(string) string { return "" }) {
		environ = append(environ, s.name+"=x")
		if s.fallback != "" {
			environ = append(environ, s.fallback+"=x")
		}
	}
	if len(environ) < 40 {
		t.Fatalf("only %d settings: the table was not read", len(environ))
	}
	if got := unknownSettings(environ); len(got) > 0 {
		t.Errorf("settings of the table reported unknown: %q", got)
	}
}
