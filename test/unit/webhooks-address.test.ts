import { blockedReason, isBlockedAddress, metadataReason } from '../../src/webhooks/address';
import { validateWebhookUrl, isHostAllowed, type NetworkPolicy } from '../../src/webhooks/policy';

const blocked: Array<[string, string]> = [
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback /8'],
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'this network'],
  ['10.0.0.1', 'RFC 1918'],
  ['172.16.0.1', 'RFC 1918'],
  ['172.31.255.255', 'RFC 1918'],
  ['192.168.1.1', 'RFC 1918'],
  ['169.254.0.1', 'link-local'],
  ['169.254.169.254', 'AWS/GCP/Azure metadata'],
  ['169.254.170.2', 'ECS task metadata'],
  ['100.64.0.1', 'CGNAT'],
  ['100.127.255.255', 'CGNAT'],
  ['100.100.100.200', 'Alibaba metadata'],
  ['192.0.0.192', 'Oracle metadata'],
  ['168.63.129.16', 'Azure WireServer'],
  ['192.0.2.1', 'TEST-NET-1'],
  ['198.51.100.7', 'TEST-NET-2'],
  ['203.0.113.9', 'TEST-NET-3'],
  ['198.18.0.1', 'benchmarking'],
  ['198.19.255.255', 'benchmarking'],
  ['192.88.99.1', '6to4 relay'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['240.0.0.1', 'reserved'],
  ['255.255.255.255', 'broadcast'],
  ['::1', 'IPv6 loopback'],
  ['::', 'IPv6 unspecified'],
  ['[::1]', 'bracketed'],
  ['fe80::1', 'IPv6 link-local'],
  ['fe80::1%eth0', 'link-local with zone'],
  ['febf::1', 'link-local upper end'],
  ['fc00::1', 'unique-local'],
  ['fd12:3456::1', 'unique-local'],
  ['fd00:ec2::254', 'AWS IMDS IPv6'],
  ['ff02::1', 'IPv6 multicast'],
  ['fec0::1', 'site-local (deprecated)'],
  ['::ffff:127.0.0.1', 'IPv4-mapped loopback'],
  ['::ffff:7f00:1', 'IPv4-mapped loopback, hex'],
  ['::ffff:169.254.169.254', 'IPv4-mapped metadata'],
  ['::ffff:10.1.2.3', 'IPv4-mapped private'],
  ['0:0:0:0:0:ffff:192.168.0.1', 'IPv4-mapped, long form'],
  ['::127.0.0.1', 'IPv4-compatible (deprecated)'],
  ['::ffff:0:127.0.0.1', 'IPv4-translated'],
  ['64:ff9b::127.0.0.1', 'NAT64 of loopback'],
  ['64:ff9b::a9fe:a9fe', 'NAT64 of metadata'],
  ['64:ff9b:1::1', 'local-use NAT64'],
  ['2002:7f00:1::', '6to4 of loopback'],
  ['2002:a9fe:a9fe::1', '6to4 of metadata'],
  ['2001::1', 'Teredo'],
  ['2001:db8::1', 'documentation'],
  ['3fff::1', 'documentation (RFC 9637)'],
  ['2001:1ff:ffff::1', 'last /32 of 2001::/23'],
  ['2001:db8:ffff::1', 'documentation, upper end'],
  ['3fff:fff::1', 'documentation (RFC 9637), upper end'],
  ['1fff:ffff::1', 'just below 2000::/3'],
  ['4000::1', 'just above 2000::/3'],
  ['100::1', 'discard-only'],
  ['5f00::1', 'SRv6 SID'],
  ['localhost', 'not an IP'],
  ['', 'empty'],
  ['010.0.0.1', 'ambiguous leading zero'],
  ['1.2.3', 'short form'],
  ['256.1.1.1', 'out of range'],
];

const open: string[] = [
  '8.8.8.8',
  '1.1.1.1',
  '93.184.215.14',
  '100.63.255.255', // just below CGNAT
  '100.128.0.0', // just above CGNAT
  '172.15.255.255',
  '172.32.0.0',
  '169.253.255.255',
  '192.0.1.1',
  '198.20.0.1',
  '223.255.255.255',
  '2606:4700:4700::1111',
  '2001:4860:4860::8888',
  '2a00:1450:4001:80b::200e',
  '::ffff:8.8.8.8',
  '64:ff9b::8.8.8.8',
  '2002:808:808::1',
  '2001:200::1', // just above 2001::/23
  '2001:db7:ffff::1', // just below 2001:db8::/32
  '2001:db9::1', // just above 2001:db8::/32
  '3fff:1000::1', // just above 3fff::/20
  '2000::1', // first of 2000::/3
  '3fff:ffff:ffff:ffff:ffff:ffff:ffff:fffe', // near the top of 2000::/3
];

describe('isBlockedAddress', () => {
  it.each(blocked)('blocks %s (%s)', (ip) => {
    expect(isBlockedAddress(ip)).toBe(true);
    expect(blockedReason(ip)).toEqual(expect.any(String));
  });
  it.each(open)('allows %s', (ip) => {
    expect(blockedReason(ip)).toBeNull();
    expect(isBlockedAddress(ip)).toBe(false);
  });
});

const strict: NetworkPolicy = { allowPrivateNetworks: false, allowedHosts: [] };

describe('validateWebhookUrl', () => {
  const cases: Array<[string, NetworkPolicy, string | null]> = [
    ['https://hooks.example.com/x?y=1', strict, null],
    ['http://hooks.example.com:8080/', strict, null],
    ['https://localhost/hook', strict, null], // names are checked at delivery, not here
    ['https://8.8.8.8/hook', strict, null],
    ['https://[2606:4700:4700::1111]/', strict, null],
    ['ftp://hooks.example.com/', strict, 'invalid_webhook_endpoint'],
    ['file:///etc/passwd', strict, 'invalid_webhook_endpoint'],
    ['javascript:alert(1)', strict, 'invalid_webhook_endpoint'],
    ['/relative/path', strict, 'invalid_webhook_endpoint'],
    ['hooks.example.com/x', strict, 'invalid_webhook_endpoint'],
    ['', strict, 'invalid_webhook_endpoint'],
    ['https://user:pw@hooks.example.com/', strict, 'invalid_webhook_endpoint'],
    ['https://user@hooks.example.com/', strict, 'invalid_webhook_endpoint'],
    ['https://:pw@hooks.example.com/', strict, 'invalid_webhook_endpoint'],
    ['http://:80/', strict, 'invalid_webhook_endpoint'],
    ['http://exa mple.com/', strict, 'invalid_webhook_endpoint'],
    [`https://example.com/${'a'.repeat(5000)}`, strict, 'invalid_webhook_endpoint'],
    ['http://127.0.0.1:8080/hook', strict, 'webhook_endpoint_not_allowed'],
    ['http://10.1.2.3/', strict, 'webhook_endpoint_not_allowed'],
    ['http://169.254.169.254/latest/meta-data', strict, 'webhook_endpoint_not_allowed'],
    ['http://[::1]/', strict, 'webhook_endpoint_not_allowed'],
    ['http://[::ffff:127.0.0.1]/', strict, 'webhook_endpoint_not_allowed'],
    ['http://[fd00:ec2::254]/', strict, 'webhook_endpoint_not_allowed'],
    ['http://2130706433/', strict, 'webhook_endpoint_not_allowed'], // WHATWG URL: 127.0.0.1
    ['http://0x7f.1/', strict, 'webhook_endpoint_not_allowed'],
    ['http://0177.0.0.1/', strict, 'webhook_endpoint_not_allowed'],
    ['http://0/', strict, 'webhook_endpoint_not_allowed'],
    ['http://127.0.0.1:8080/hook', { allowPrivateNetworks: true, allowedHosts: [] }, null],
    ['http://127.0.0.1:8080/hook', { allowPrivateNetworks: false, allowedHosts: ['127.0.0.1'] }, null],
    ['http://[::1]:8080/hook', { allowPrivateNetworks: false, allowedHosts: ['[::1]'] }, null],
    ['http://[::1]:8080/hook', { allowPrivateNetworks: false, allowedHosts: ['0:0::1'] }, null],
    ['http://10.0.0.2/', { allowPrivateNetworks: false, allowedHosts: ['10.0.0.1'] }, 'webhook_endpoint_not_allowed'],
    // Cloud metadata stays refused under allowPrivateNetworks; only an explicit entry opens it.
    ['http://169.254.169.254/latest/meta-data', { allowPrivateNetworks: true, allowedHosts: [] }, 'webhook_endpoint_not_allowed'],
    ['http://[::ffff:169.254.169.254]/', { allowPrivateNetworks: true, allowedHosts: [] }, 'webhook_endpoint_not_allowed'],
    ['http://[fd00:ec2::254]/', { allowPrivateNetworks: true, allowedHosts: [] }, 'webhook_endpoint_not_allowed'],
    ['http://100.100.100.200/', { allowPrivateNetworks: true, allowedHosts: [] }, 'webhook_endpoint_not_allowed'],
    ['http://169.254.169.254/', { allowPrivateNetworks: true, allowedHosts: ['169.254.169.254'] }, null],
    ['http://169.254.1.1/', { allowPrivateNetworks: true, allowedHosts: [] }, null],
    ['http://[fd00::1]/', { allowPrivateNetworks: true, allowedHosts: [] }, null],
  ];
  it.each(cases)('%s -> %s', (raw, policy, code) => {
    const r = validateWebhookUrl(raw, policy);
    if (code === null) {
      expect(r).toMatchObject({ ok: true });
      if (r.ok) expect(r.url).toBeInstanceOf(URL);
    } else {
      expect(r).toMatchObject({ ok: false, code, message: expect.any(String) });
    }
  });
});

describe('metadataReason', () => {
  it.each([
    '169.254.169.254',
    '169.254.170.2',
    '100.100.100.200',
    '192.0.0.192',
    '168.63.129.16',
    'fd00:ec2::254',
    'FD00:EC2:0::254',
    '::ffff:169.254.169.254',
    '::ffff:a9fe:a9fe',
    '64:ff9b::169.254.169.254',
  ])('%s is a metadata endpoint', (ip) => expect(metadataReason(ip)).toEqual(expect.any(String)));
  it.each(['169.254.169.253', '10.0.0.1', '127.0.0.1', 'fd00:ec2::253', '8.8.8.8', 'nonsense'])('%s is not', (ip) => expect(metadataReason(ip)).toBeNull());
});

describe('isHostAllowed', () => {
  const policy: NetworkPolicy = { allowPrivateNetworks: false, allowedHosts: ['Hooks.Internal', '*.svc.cluster.local', '10.0.0.5'] };
  it.each([
    ['hooks.internal', true],
    ['HOOKS.internal.', true],
    ['a.hooks.internal', false],
    ['receiver.ns.svc.cluster.local', true],
    ['a.b.svc.cluster.local', true],
    ['svc.cluster.local', false],
    ['evilsvc.cluster.local', false],
    ['10.0.0.5', true],
    ['10.0.0.6', false],
    ['example.com', false],
  ])('%s -> %s', (host, expected) => {
    expect(isHostAllowed(host, policy)).toBe(expected);
  });
  it('allows everything with allowPrivateNetworks', () => {
    expect(isHostAllowed('anything', { allowPrivateNetworks: true, allowedHosts: [] })).toBe(true);
  });
});
