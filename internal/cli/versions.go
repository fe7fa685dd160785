package cli

import (
	"strings"

	"github.com/keylime-go/keylime/internal/api"
)

func apiVersions() string { return strings.Join(api.SupportedVersions, ", ") }
