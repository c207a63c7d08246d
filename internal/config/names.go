package config

// ValidServiceName reports whether name can name a service or a connector:
// 1 to 63 characters of lowercase letters, digits, '.', '_' and '-',
// starting with a letter or a digit. Such names travel in the tunnel
// protocol and may become DNS labels.
func ValidServiceName(name string) bool { return serviceNameRE.MatchString(name) }
