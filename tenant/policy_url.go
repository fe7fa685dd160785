package tenant

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/rs/zerolog"
)

// MaxPolicyDownload is the most bytes a policy download may have (64 MiB); a larger body is refused.
const MaxPolicyDownload = 64 << 20

// Errors of policy downloads, testable with errors.Is.
var (
	// ErrPolicyURL means a policy URL cannot be used (not an absolute http:// or https:// URL, given
	// together with the matching file, or a runtime policy URL without a checksum); nothing was fetched.
	ErrPolicyURL = errors.New("invalid policy URL")
	// ErrPolicyDownload means a policy could not be downloaded (network error, timeout, a status other
	// than 200, a redirect, a body over the size limit); nothing was sent to the verifier.
	ErrPolicyDownload = errors.New("policy download failed")
)

// PolicyURLs are the downloadable parts of a runtime policy input: Keylime's --runtime-policy-url and
// --allowlist-url. Empty strings are not downloaded.
type PolicyURLs struct {
	// Policy is downloaded into RuntimePolicyInput.Policy; like Keylime's tenant it needs Checksum.
	Policy string
	// Allowlist is downloaded into RuntimePolicyInput.Allowlist (a legacy allowlist).
	Allowlist string
}

// PolicyFetcher downloads policies given by URL the way Keylime's tenant does: one GET per URL, no
// redirects followed and only 200 accepted, bounded in time and size, and certificates checked.
type PolicyFetcher struct {
	// Timeout bounds each download, body included (tenant.request_timeout); zero means 60 seconds.
	Timeout time.Duration
	// RootCAs verifies https:// servers; nil means the system roots (which a Go program on Linux takes
	// from SSL_CERT_FILE or SSL_CERT_DIR when set).
	RootCAs *x509.CertPool
	// MaxSize bounds each body in bytes; zero means MaxPolicyDownload.
	MaxSize int64
	// Log gets a line per download and the warning about plain http:// downloads nothing
	// authenticates; the zero value logs nothing.
	Log zerolog.Logger
}

// Download fills in.Policy and in.Allowlist from urls. Every URL is checked before anything is fetched:
// a URL given for a part that is already set (its file was given too) and a policy URL without
// in.Checksum are refused with ErrPolicyURL. The bytes then take the path of a file given directly
// (PrepareRuntimePolicy checks the checksum, the DSSE signature and converts allowlists).
func (f PolicyFetcher) Download(ctx context.Context, in *RuntimePolicyInput, urls PolicyURLs) error {
	type job struct {
		what, raw string
		dst       *[]byte
		u         *url.URL
	}
	var jobs []*job
	for _, j := range []*job{{what: "runtime policy", raw: urls.Policy, dst: &in.Policy}, {what: "allowlist", raw: urls.Allowlist, dst: &in.Allowlist}} {
		if j.raw == "" {
			continue
		}
		if *j.dst != nil {
			return fmt.Errorf("%w: a %s file and a %s URL exclude each other", ErrPolicyURL, j.what, j.what)
		}
		u, err := ParsePolicyURL(j.raw)
		if err != nil {
			return err
		}
		j.u = u
		jobs = append(jobs, j)
	}
	if urls.Policy != "" && in.Checksum == "" {
		return fmt.Errorf("%w: a runtime policy URL needs the policy's SHA-256 (--runtime-policy-checksum), as in Keylime's tenant", ErrPolicyURL)
	}
	for _, j := range jobs {
		// A checksum covers only the runtime policy; an allowlist over plain http is unauthenticated.
		if j.u.Scheme == "http" && (j.dst != &in.Policy || in.Checksum == "") {
			f.Log.Warn().Str("url", j.u.Redacted()).Msgf("downloading the %s over plain http: nothing authenticates it (use https://)", j.what)
		}
		f.Log.Info().Str("url", j.u.Redacted()).Msgf("downloading the %s", j.what)
		b, err := f.Fetch(ctx, j.u.String())
		if err != nil {
			return err
		}
		*j.dst = b
	}
	return nil
}

// ParsePolicyURL checks that raw is an absolute http:// or https:// URL with a host (ErrPolicyURL).
func ParsePolicyURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicyURL, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%w: %q: use an https:// (or http://) URL", ErrPolicyURL, u.Redacted())
	}
	return u, nil
}

// Fetch downloads one policy with a GET. Anything but a 200 answer is an ErrPolicyDownload naming the
// URL and the status (a redirect is not followed, as in Keylime's tenant, and its Location is named), and
// so is a body larger than MaxSize.
func (f PolicyFetcher) Fetch(ctx context.Context, rawURL string) ([]byte, error) {
	u, err := ParsePolicyURL(rawURL)
	if err != nil {
		return nil, err
	}
	shown := u.Redacted()
	timeout, limit := f.Timeout, f.MaxSize
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	if limit <= 0 {
		limit = MaxPolicyDownload
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: f.RootCAs, MinVersion: tls.VersionTLS12}
	defer tr.CloseIdleConnections()
	hc := &http.Client{
		Transport:     tr,
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPolicyDownload, shown, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is named once, without its password
		}
		return nil, fmt.Errorf("%w: GET %s: %w", ErrPolicyDownload, shown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(shown, resp)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: GET %s: body of %d bytes is over the %s limit", ErrPolicyDownload, shown, resp.ContentLength, sizeText(limit))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: reading the body: %w", ErrPolicyDownload, shown, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: GET %s: body is over the %s limit", ErrPolicyDownload, shown, sizeText(limit))
	}
	return b, nil
}

func statusError(shown string, resp *http.Response) error {
	err := fmt.Errorf("%w: GET %s: status %s", ErrPolicyDownload, shown, resp.Status)
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		if lu, perr := url.Parse(loc); perr == nil {
			loc = lu.Redacted()
		}
		err = fmt.Errorf("%w (redirects are not followed; Location: %s)", err, loc)
	}
	return err
}

// sizeText is a limit in MiB when it is a whole number of them, in bytes otherwise.
func sizeText(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d-byte", n)
}
