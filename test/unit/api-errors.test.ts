import { API_ERRORS, apiError } from '../../src/api';

describe('the error catalog', () => {
  it('answers each code with its status, the JSON shape, Envoy details and the catalog retry-after', () => {
    const r = apiError('store_uncertain', 'may exist', { headers: [['location', '/v1/runs/x']], fields: { run_id: 'x' } });
    expect(r.status).toBe(503);
    expect(r.headers).toEqual([
      ['content-type', 'application/json'],
      ['retry-after', '1'],
      ['location', '/v1/runs/x'],
    ]);
    expect(JSON.parse(String(r.body))).toEqual({ error: { code: 'store_uncertain', message: 'may exist', run_id: 'x' } });
    expect(r.details).toBe('async_sidecar_store_uncertain');
    expect(apiError('redeliver_too_soon', 'wait', { retryAfterS: 10 }).headers).toContainEqual(['retry-after', '10']);
    expect(apiError('run_not_found', 'no').headers).toEqual([['content-type', 'application/json']]);
  });

  it('gives every code a status that is a client or server error, and retry-after only to 503s', () => {
    for (const [code, spec] of Object.entries(API_ERRORS) as Array<[string, { status: number; retryAfterS?: number }]>) {
      expect([code, spec.status >= 400 && spec.status < 600]).toEqual([code, true]);
      if (spec.retryAfterS !== undefined) expect([code, spec.status]).toEqual([code, 503]);
    }
  });
});
