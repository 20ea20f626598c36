package redisbroker

// crash stops the broker as a killed process would: no registry clean-up, no
// flush; its keys are left to expire.
func (b *Broker) crash() {
	b.closeOnce.Do(func() {
		b.abandon = true
		close(b.quit)
		b.wg.Wait()
		_ = b.client.Close()
	})
}
