import { dispatchTarget, parseDispatchBase, TargetOutsideOrigin } from '../../src/dispatch/target';

describe('dispatch target', () => {
  const base = parseDispatchBase('http://127.0.0.1:8081');

  it('replays an origin-form target on the dispatch origin, path and query as they were', () => {
    expect(dispatchTarget(base, '/predict?b=2&a=1').href).toBe('http://127.0.0.1:8081/predict?b=2&a=1');
    expect(dispatchTarget(base, '//double/slash').origin).toBe('http://127.0.0.1:8081');
    expect(dispatchTarget(base, '*').href).toBe('http://127.0.0.1:8081/');
  });

  it('keeps a base path of DISPATCH_URL', () => {
    expect(dispatchTarget(parseDispatchBase('http://app:8000/base/'), '/x?y').href).toBe('http://app:8000/base/x?y');
  });

  it.each(['@127.0.0.2:9/latest/meta-data/', 'http://169.254.169.254/', ':9/x', 'x'])('refuses %j, which would leave the dispatch origin', (target) => {
    expect(() => dispatchTarget(base, target)).toThrow(TargetOutsideOrigin);
  });
});
