package lab

import (
	"context"
	"errors"
)

func (l *Lab) startCluster(ctx context.Context) error {
	return errors.New("not yet")
}
