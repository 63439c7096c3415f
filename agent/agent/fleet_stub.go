//go:build !fleetwip

package agent

import (
	"context"
	"crypto/tls"
	"errors"

	"github.com/flotilla-io/flotilla/agent/state"
)

func startFleet(context.Context, *Config, func(func(context.Context))) (*state.Store, *tls.Config, func(), error) {
	return nil, nil, nil, errors.New("fleet mode is not built in yet")
}
